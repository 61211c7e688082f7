#!/usr/bin/env bash
# End to end on a kind cluster: build and load the images, install PostgreSQL and Garage, the
# chart (the operator and the mail-server fleet it owns), apply examples/, wait until every
# resource is Ready, then send a message through the fleet's Service with smtplib and read it
# back with imaplib. Needs docker, kind, kubectl, helm and python3. NOT run on the project
# machines (no container engine there): see docs/operator.md.
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

# The fleet's certificate, as cert-manager would write it (tls.crt, tls.key).
certs=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj /CN=mail.example.test \
    -addext subjectAltName=DNS:mail.example.test,DNS:mta-sts.example.test,DNS:autoconfig.example.test \
    -keyout "$certs/tls.key" -out "$certs/tls.crt" 2>/dev/null
kubectl -n "$ns" create secret tls mailserver-tls --cert="$certs/tls.crt" --key="$certs/tls.key" \
    --dry-run=client -o yaml | kubectl apply -f -

helm upgrade --install mail charts/mail-platform --namespace "$ns" \
    --set image.repository=kubemail/mail-operator --set image.tag="$tag" \
    --set image.pullPolicy=Never --set mailHost=mail.example.test \
    --set s3.endpoint=http://garage.$ns.svc:3900 --set s3.accessKeyId="$s3_key_id" \
    --set fleet.image="kubemail/mailserver:$tag" --set fleet.minReplicas=2
kubectl -n "$ns" rollout status deployment/mail-operator --timeout=180s

kubectl -n "$ns" apply -f examples/
for kind in maildomains dkimkeys mailboxes; do
    kubectl -n "$ns" wait "$kind" --all --for=condition=Ready --timeout=180s
done
kubectl -n "$ns" get maildomains,mailboxes,dkimkeys
kubectl -n "$ns" get maildomain example-test -o jsonpath='{.status.zone}'
echo "kind e2e: every resource Ready"

# The fleet the operator owns, reached through its Service.
until kubectl -n "$ns" get deployment/mailserver >/dev/null 2>&1; do sleep 2; done
kubectl -n "$ns" rollout status deployment/mailserver --timeout=300s
kubectl -n "$ns" port-forward service/mailserver 12525:25 12143:143 12443:443 >/dev/null &
forward=$!
trap 'kill $forward' EXIT
until python3 -c 'import socket; socket.create_connection(("127.0.0.1", 12525), 1)' 2>/dev/null; do
    sleep 1
done
python3 - <<'PY'
import imaplib, smtplib, uuid
subject = f"kind e2e {uuid.uuid4()}"
with smtplib.SMTP("127.0.0.1", 12525) as smtp:
    smtp.sendmail("bob@example.test", ["alice@example.test"],
                  f"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\nHello.\r\n")
imap = imaplib.IMAP4("127.0.0.1", 12143)
imap.login("alice@example.test", "alice-example-pw")
imap.select("INBOX")
typ, found = imap.search(None, "SUBJECT", f'"{subject}"')
assert typ == "OK" and found[0].split(), found
print("kind e2e: a message went through the Service and was read back")
PY
# Client self-configuration over HTTPS, verified against the certificate made above.
curl -sSf --cacert "$certs/tls.crt" --resolve mail.example.test:12443:127.0.0.1 \
    "https://mail.example.test:12443/mail/config-v1.1.xml?emailaddress=alice@example.test" \
    | grep -q '<hostname>mail.example.test</hostname>'
curl -sSf --cacert "$certs/tls.crt" --resolve mta-sts.example.test:12443:127.0.0.1 \
    https://mta-sts.example.test:12443/.well-known/mta-sts.txt | grep -q '^version: STSv1'
echo "kind e2e: autoconfig and the MTA-STS policy served over HTTPS"
