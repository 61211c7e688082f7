#!/usr/bin/env bash
# End to end on a kind cluster: build and load the images, install PostgreSQL and Garage, the
# chart, apply examples/, and wait until every resource is Ready. Needs docker, kind, kubectl
# and helm. NOT run on the project machines (no container engine there): see docs/operator.md.
#
# Not yet: sending and reading a message through the Service. The operator does not own the
# mail-server fleet yet, so there is no Service to send through.
set -euo pipefail
cd "$(dirname "$0")/../.."

cluster=${KIND_CLUSTER:-kubemail}
tag=${TAG:-dev}
ns=mail
s3_key_id=GK000000000000000000000001
s3_secret=0000000000000000000000000000000000000000000000000000000000000001

if ! kind get clusters | grep -qx "$cluster"; then
    kind create cluster --name "$cluster" --config kind-config.yaml
fi
kubectl config use-context "kind-$cluster"

docker build -f docker/mail-operator.Dockerfile -t "kubemail/mail-operator:$tag" .
docker build -f docker/mailserver.Dockerfile -t "kubemail/mailserver:$tag" .
kind load docker-image --name "$cluster" "kubemail/mail-operator:$tag" "kubemail/mailserver:$tag"

kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f e2e/kind/stores.yaml
kubectl -n "$ns" rollout status deployment/postgres --timeout=180s
kubectl -n "$ns" rollout status deployment/garage --timeout=180s

# Garage: one node layout and a fixed key, as crates/testkit does.
garage() { kubectl -n "$ns" exec deploy/garage -- /garage "$@"; }
node=$(garage node id -q | cut -d@ -f1)
garage layout assign -z dc1 -c 1G "$node" || true
garage layout apply --version 1 || true
garage key import --yes -n operator "$s3_key_id" "$s3_secret" || true
# The operator creates one bucket per MailDomain.
garage key allow --create-bucket operator
kubectl -n "$ns" create secret generic mail-s3 --from-literal=secret-access-key="$s3_secret" \
    --dry-run=client -o yaml | kubectl apply -f -

helm upgrade --install mail charts/mail-platform --namespace "$ns" \
    --set image.repository=kubemail/mail-operator --set image.tag="$tag" \
    --set image.pullPolicy=Never --set mailHost=mail.example.test \
    --set s3.endpoint=http://garage.$ns.svc:3900 --set s3.accessKeyId="$s3_key_id"
kubectl -n "$ns" rollout status deployment/mail-operator --timeout=180s

kubectl -n "$ns" apply -f examples/
for kind in maildomains dkimkeys mailboxes; do
    kubectl -n "$ns" wait "$kind" --all --for=condition=Ready --timeout=180s
done
kubectl -n "$ns" get maildomains,mailboxes,dkimkeys
kubectl -n "$ns" get maildomain example-test -o jsonpath='{.status.zone}'
echo "kind e2e: every resource Ready"
