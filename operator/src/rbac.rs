//! The API calls the controllers make, as RBAC rules: the chart grants exactly these and the
//! tests here compare (they also lint and render the chart). Keep it in step with the code: a
//! new call is a new line here.

/// (API group, resource, verbs).
pub const PERMISSIONS: &[(&str, &str, &[&str])] = &[
    // Controller::new watches each kind; the finalizer is added and removed by JSON patch.
    (
        "mail.kubemail.io",
        "maildomains",
        &["list", "watch", "patch"],
    ),
    ("mail.kubemail.io", "mailboxes", &["list", "watch", "patch"]),
    ("mail.kubemail.io", "dkimkeys", &["list", "watch", "patch"]),
    // Status by server-side apply.
    ("mail.kubemail.io", "maildomains/status", &["patch"]),
    ("mail.kubemail.io", "mailboxes/status", &["patch"]),
    ("mail.kubemail.io", "dkimkeys/status", &["patch"]),
    // Mailboxes read their password Secret and are woken by it; DkimKeys create and own theirs
    // and delete a rotated-out key's.
    ("", "secrets", &["get", "list", "watch", "create", "delete"]),
    // spec.dns.externalDNS: the MailDomain's DNSEndpoint, removed when the option is off.
    ("externaldns.k8s.io", "dnsendpoints", &["patch", "delete"]),
    // The Recorder creates an Event and patches its series when it repeats.
    ("events.k8s.io", "events", &["create", "patch"]),
    // Leader election and the fleet (a Role in the operator's own namespace).
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
    ("apps", "deployments", &["patch"]),
    ("", "services", &["patch"]),
    ("policy", "poddisruptionbudgets", &["patch"]),
    // The fleet's HPA, or its removal when the option is off.
    (
        "autoscaling",
        "horizontalpodautoscalers",
        &["patch", "delete"],
    ),
];

/// Granted only when a chart value turns the feature on: (value, API group, resource, verbs).
pub const OPTIONAL_PERMISSIONS: &[(&str, &str, &str, &[&str])] = &[
    // fleet.certificate.issuer: the fleet's cert-manager Certificate.
    (
        "fleet.certificate.issuer=letsencrypt",
        "cert-manager.io",
        "certificates",
        &["patch"],
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::{OPTIONAL_PERMISSIONS, PERMISSIONS};

    fn chart() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/mail-platform")
    }

    /// helm from `HELM`, where `scripts/deps.sh` installs it, or PATH.
    fn helm_program() -> String {
        let cached = std::env::var("HOME")
            .map(|h| format!("{h}/.cache/kubemail/bin/helm"))
            .unwrap_or_default();
        std::env::var("HELM").ok().unwrap_or_else(|| {
            if Path::new(&cached).exists() {
                cached
            } else {
                "helm".to_string()
            }
        })
    }

    fn helm(args: &[&str]) -> String {
        let program = helm_program();
        let out = Command::new(&program)
            .args(args)
            .arg(chart())
            .output()
            .unwrap_or_else(|e| {
                panic!("{program}: {e}; scripts/deps.sh installs helm (ensure_helm)")
            });
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "helm {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    fn rendered(extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["template", "t", "--namespace", "mail"];
        args.extend_from_slice(extra);
        let text = helm(&args);
        text.split("\n---").filter_map(parse_document).collect()
    }

    fn parse_document(doc: &str) -> Option<serde_json::Value> {
        let value: serde_json::Value = serde_yaml::from_str(doc).ok()?;
        (!value.is_null()).then_some(value)
    }

    fn granted(role: &serde_json::Value) -> BTreeSet<(String, String, String)> {
        let mut set = BTreeSet::new();
        for rule in role["rules"].as_array().expect("rules") {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .expect("a list")
                    .iter()
                    .map(|v| v.as_str().expect("a string").to_string())
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        set.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
        set
    }

    #[test]
    fn the_chart_lints_and_its_rbac_grants_exactly_what_the_code_uses() {
        helm(&["lint", "--strict"]);
        let used: BTreeSet<(String, String, String)> = PERMISSIONS
            .iter()
            .flat_map(|(group, resource, verbs)| {
                verbs
                    .iter()
                    .map(|verb| (group.to_string(), resource.to_string(), verb.to_string()))
            })
            .collect();
        let all = |extra: &[&str]| -> BTreeSet<_> {
            rendered(extra)
                .iter()
                .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
                .flat_map(granted)
                .collect()
        };
        // Every Role and ClusterRole together, cluster-wide and for one watched namespace.
        for extra in [&[][..], &["--set", "watchNamespace=mail"][..]] {
            assert_eq!(all(extra), used, "{extra:?}");
        }
        // An optional feature adds its own verbs, and only those.
        for (value, group, resource, verbs) in OPTIONAL_PERMISSIONS {
            let mut want = used.clone();
            want.extend(
                verbs
                    .iter()
                    .map(|verb| (group.to_string(), resource.to_string(), verb.to_string())),
            );
            assert_eq!(all(&["--set", value]), want, "{value}");
        }
    }

    #[test]
    fn the_operator_pod_is_restricted_and_names_its_settings() {
        let objects = rendered(&[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "fleet.image=kubemail/mailserver:1",
            "--set",
            "grafanaDashboard.enabled=true",
        ]);
        let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "PodMonitor",
                "Role",
                "RoleBinding",
                "Service",
                "ServiceAccount",
                "ServiceMonitor"
            ])
        );
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(
            container["securityContext"]["capabilities"]["drop"][0],
            "ALL"
        );
        let env: BTreeSet<&str> = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for name in [
            "DATABASE_URL",
            "MAIL_HOST",
            "S3_ENDPOINT",
            "S3_SECRET_ACCESS_KEY_FILE",
        ] {
            assert!(env.contains(name), "{name} missing from {env:?}");
        }
    }

    /// With every fleet option on, each variable the chart gives the operator is one of its
    /// settings (a misspelt name would be ignored silently in the pod).
    #[test]
    fn the_chart_sets_only_variables_the_operator_reads() {
        let objects = rendered(&[
            "--set",
            "fleet.image=kubemail/mailserver:1",
            "--set",
            "fleet.hpa.enabled=true",
            "--set",
            "fleet.certificate.issuer=letsencrypt",
            "--set",
            "fleet.proxyTrusted=10.0.0.0/8",
            "--set",
            "watchNamespace=mail",
        ]);
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("Deployment");
        let command =
            <crate::controller::Args as clap::Args>::augment_args(clap::Command::new("run"));
        let known: BTreeSet<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        let set: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for name in [
            "FLEET_HPA_CPU_PERCENT",
            "FLEET_CERTIFICATE_ISSUER",
            "FLEET_PROXY_TRUSTED",
            "FLEET_TLS_SECRET",
        ] {
            assert!(set.contains(&name), "{name} not set: {set:?}");
        }
        for name in set {
            assert!(known.contains(name), "{name} is no operator setting");
        }
    }

    #[test]
    fn bad_values_are_refused_by_the_schema() {
        let out = Command::new(helm_program())
            .args(["template", "t", "--set", "logFormat=xml"])
            .arg(chart())
            .output()
            .expect("helm");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("logFormat"));
    }

    #[test]
    fn every_rendered_object_and_crd_validates_against_the_kubernetes_schemas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rendered = dir.path().join("rendered.yaml");
        std::fs::write(&rendered, helm(&["template", "t", "--namespace", "mail"])).expect("write");
        let mut files = vec![rendered];
        for name in ["maildomain.yaml", "mailbox.yaml", "dkimkey.yaml"] {
            files.push(chart().join("crds").join(name));
        }
        crate::fixtures::kubernetes_validate(&files);
    }

    /// Every `mail_operator_*` series the dashboard queries is one the operator exports, and
    /// the chart ships the dashboard as it is in the repository.
    #[test]
    fn the_dashboard_queries_metrics_that_exist() {
        let text = std::fs::read_to_string(chart().join("dashboards/mail-platform.json"))
            .expect("the dashboard");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let metrics = crate::metrics::Metrics::default();
        drop(metrics.reconcile("Mailbox"));
        metrics.error("Mailbox", "Database");
        let exported = metrics.encode();
        let mut checked = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("mail_operator_") {
                        assert!(exported.contains(word), "{word} is not exported");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 3, "{checked}");
        let objects = rendered(&["--set", "grafanaDashboard.enabled=true"]);
        let config_map = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap")
            .expect("the dashboard ConfigMap");
        let shipped: serde_json::Value = serde_json::from_str(
            config_map["data"]["mail-platform.json"]
                .as_str()
                .expect("data"),
        )
        .expect("JSON");
        assert_eq!(shipped, dashboard);
    }
}
