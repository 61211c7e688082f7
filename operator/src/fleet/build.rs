//! The fleet's objects, from the settings and the mailbox count. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle,
    LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Settings;

/// The name of every fleet object.
pub const NAME: &str = "mailserver";

/// (name, Service port, container port): the standard ports outside, unprivileged inside.
pub const PORTS: [(&str, i32, i32); 7] = [
    ("smtp", 25, 2525),
    ("submissions", 465, 2465),
    ("submission", 587, 2587),
    ("imap", 143, 2143),
    ("imaps", 993, 2993),
    ("pop3", 110, 2110),
    ("pop3s", 995, 2995),
];
/// Client self-configuration and the MTA-STS policy, over HTTPS.
pub const HTTPS_PORT: (&str, i32, i32) = ("https", 443, 8443);
const HTTP_PORT: i32 = 8080;
/// Where the TLS Secret is mounted; cert-manager's key names.
pub const TLS_DIR: &str = "/var/run/secrets/mail-tls";
const S3_DIR: &str = "/var/run/secrets/mail-s3";

#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub deployment: Deployment,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
    /// With `--fleet-hpa-cpu-percent`; the Deployment then leaves `replicas` to it.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// A cert-manager `Certificate` (no typed struct: cert-manager's CRD), with
    /// `--fleet-certificate-issuer`.
    pub certificate: Option<serde_json::Value>,
}

impl Fleet {
    /// The replicas the Deployment asks for, or the HPA's minimum.
    pub fn replicas(&self) -> i32 {
        self.deployment
            .spec
            .replicas
            .or_else(|| self.hpa.as_ref().and_then(|h| h.spec.min_replicas))
            .unwrap_or(0)
    }
}

/// The mail server's command line: every listener (the seven mail ports and HTTPS on the
/// pod's unprivileged ports), the mounted certificate, PROXY from the trusted networks.
pub fn args(settings: &Settings) -> Vec<String> {
    let mut args = Vec::new();
    for (kind, _, port) in PORTS.iter().chain([&HTTPS_PORT]) {
        args.push("--listen".to_string());
        args.push(format!("{kind}=0.0.0.0:{port}"));
    }
    args.extend([
        "--http-listen".to_string(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--tls-cert".to_string(),
        format!("{TLS_DIR}/tls.crt"),
        "--tls-key".to_string(),
        format!("{TLS_DIR}/tls.key"),
        "--hostname".to_string(),
        settings.hostname.clone(),
        "--bucket-prefix".to_string(),
        settings.bucket_prefix.clone(),
    ]);
    if let Some(networks) = &settings.proxy_trusted {
        args.extend(["--proxy-trusted".to_string(), networks.clone()]);
    }
    if let Some((endpoint, region, key_id)) = &settings.s3 {
        args.extend([
            "--s3-endpoint".to_string(),
            endpoint.clone(),
            "--s3-region".to_string(),
            region.clone(),
            "--s3-access-key-id".to_string(),
            key_id.clone(),
            "--s3-secret-access-key-file".to_string(),
            format!("{S3_DIR}/secret-access-key"),
        ]);
    }
    args
}

/// One replica per `mailboxes_per_replica` mailboxes, at least `min_replicas`, at most
/// `max_replicas` (and never fewer than the minimum if the two are crossed).
pub fn replicas(settings: &Settings, mailboxes: i64) -> i32 {
    let per = settings.mailboxes_per_replica.max(1);
    let wanted = mailboxes.max(0).saturating_add(per - 1) / per;
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    wanted
        .min(settings.max_replicas)
        .max(settings.min_replicas)
        .max(1)
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), NAME.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "mail".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            crate::context::FIELD_MANAGER.to_string(),
        ),
    ])
}

fn selector() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_string(), NAME.to_string())])
}

fn meta(namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(NAME.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels()),
        ..ObjectMeta::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    }
}

pub fn build(settings: &Settings, namespace: &str, mailboxes: i64, domains: &[String]) -> Fleet {
    // Secrets only from Secrets: the URL from the environment, the rest as files.
    let env_vars = vec![EnvVar {
        name: "DATABASE_URL".to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: settings.database_secret.clone(),
                key: "url".to_string(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    let mut ports: Vec<ContainerPort> = PORTS
        .iter()
        .chain([&HTTPS_PORT])
        .map(|(name, _, port)| ContainerPort {
            name: Some(name.to_string()),
            container_port: *port,
            ..ContainerPort::default()
        })
        .collect();
    ports.push(ContainerPort {
        name: Some("http".to_string()),
        container_port: HTTP_PORT,
        ..ContainerPort::default()
    });
    let container = Container {
        name: NAME.to_string(),
        image: settings.image.clone(),
        args: Some(args(settings)),
        env: Some(env_vars),
        ports: Some(ports),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(settings.cpu_request.clone())),
                (
                    "memory".to_string(),
                    Quantity(settings.memory_request.clone()),
                ),
            ])),
            ..ResourceRequirements::default()
        }),
        // The Service's endpoints drop the pod while it still serves; then SIGTERM drains it
        // (421 to SMTP sessions, goodbyes between commands).
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 5 }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        // The restricted Pod Security profile, and nothing to write: mail lives in PostgreSQL
        // and S3.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "s3".to_string(),
                mount_path: S3_DIR.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tls".to_string(),
                mount_path: TLS_DIR.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        automount_service_account_token: Some(false),
        // 5 s preStop, then the server's 10 s drain.
        termination_grace_period_seconds: Some(30),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "s3".to_string(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(settings.s3_secret.clone()),
                    optional: Some(settings.s3.is_none()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            // A pod waits for the certificate rather than serve without one.
            Volume {
                name: "tls".to_string(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(settings.tls_secret.clone()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    let deployment = Deployment {
        metadata: meta(namespace),
        spec: DeploymentSpec {
            // With an HPA the replicas are its to set; applying a number would fight it.
            replicas: match settings.hpa_cpu_percent {
                Some(_) => None,
                None => Some(replicas(settings, mailboxes)),
            },
            selector: LabelSelector {
                match_labels: Some(selector()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    };
    let service = Service {
        metadata: meta(namespace),
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".to_string()),
            // Local keeps the client's address (SPF, bans, rate limits) without PROXY
            // headers; with them the address arrives in the header.
            external_traffic_policy: Some(
                match settings.proxy_trusted {
                    Some(_) => "Cluster",
                    None => "Local",
                }
                .to_string(),
            ),
            selector: Some(selector()),
            ports: Some(
                PORTS
                    .iter()
                    .chain([&HTTPS_PORT])
                    .map(|(name, port, _)| ServicePort {
                        name: Some(name.to_string()),
                        port: *port,
                        target_port: Some(IntOrString::String(name.to_string())),
                        protocol: Some("TCP".to_string()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let pdb = PodDisruptionBudget {
        metadata: meta(namespace),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    Fleet {
        deployment,
        service,
        pdb,
        hpa: settings
            .hpa_cpu_percent
            .map(|percent| hpa(settings, namespace, percent)),
        certificate: settings
            .certificate_issuer
            .as_ref()
            .map(|issuer| certificate(settings, namespace, issuer, domains)),
    }
}

fn hpa(settings: &Settings, namespace: &str, percent: i32) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: meta(namespace),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_string()),
                kind: "Deployment".to_string(),
                name: NAME.to_string(),
            },
            min_replicas: Some(settings.min_replicas.max(1)),
            max_replicas: settings.max_replicas.max(settings.min_replicas).max(1),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_string(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_string(),
                    target: MetricTarget {
                        type_: "Utilization".to_string(),
                        average_utilization: Some(percent),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    }
}

/// The names the certificate covers: the mail host, then each hosted domain's MTA-STS and
/// autoconfig hosts (what clients and sending MTAs ask for over HTTPS).
pub fn certificate_names(settings: &Settings, domains: &[String]) -> Vec<String> {
    let mut names = vec![settings.hostname.clone()];
    for domain in domains {
        names.push(format!("mta-sts.{domain}"));
        names.push(format!("autoconfig.{domain}"));
    }
    names
}

fn certificate(
    settings: &Settings,
    namespace: &str,
    issuer: &str,
    domains: &[String],
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": meta(namespace),
        "spec": {
            "secretName": settings.tls_secret,
            "dnsNames": certificate_names(settings, domains),
            "issuerRef": {
                "group": "cert-manager.io",
                "kind": settings.certificate_issuer_kind,
                "name": issuer,
            },
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn settings() -> Settings {
        Settings {
            image: Some("kubemail/mailserver:1".to_string()),
            namespace: None,
            min_replicas: 2,
            max_replicas: 5,
            mailboxes_per_replica: 1000,
            database_secret: "mail-database".to_string(),
            s3_secret: "mail-s3".to_string(),
            tls_secret: "mailserver-tls".to_string(),
            certificate_issuer: None,
            certificate_issuer_kind: "ClusterIssuer".to_string(),
            proxy_trusted: None,
            hpa_cpu_percent: None,
            cpu_request: "250m".to_string(),
            memory_request: "256Mi".to_string(),
            hostname: "mail.example.net".to_string(),
            s3: Some(("http://garage:3900".into(), "garage".into(), "GK1".into())),
            bucket_prefix: "mail".to_string(),
        }
    }

    #[test]
    fn replicas_follow_mailboxes_within_bounds() {
        let s = settings();
        for (mailboxes, want) in [
            (0, 2),
            (1, 2),
            (2000, 2),
            (2001, 3),
            (5000, 5),
            (10_000_000, 5),
        ] {
            assert_eq!(replicas(&s, mailboxes), want, "{mailboxes}");
        }
        let crossed = Settings {
            min_replicas: 3,
            max_replicas: 1,
            ..settings()
        };
        assert_eq!(replicas(&crossed, 0), 3);
    }

    #[test]
    fn the_service_maps_standard_ports_to_the_pods_unprivileged_ones() {
        let fleet = build(&settings(), "mail", 10, &[]);
        let spec = fleet.service.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        let ports: Vec<i32> = spec.ports.expect("ports").iter().map(|p| p.port).collect();
        assert_eq!(ports, [25, 465, 587, 143, 993, 110, 995, 443]);
        let pod = fleet.deployment.spec.template.spec.expect("pod");
        let container = &pod.containers[0];
        let declared: Vec<i32> = container
            .ports
            .as_ref()
            .expect("ports")
            .iter()
            .map(|p| p.container_port)
            .collect();
        assert!(declared.iter().all(|p| *p >= 1024), "{declared:?}");
        let security = container.security_context.as_ref().expect("security");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(
            pod.security_context.expect("pod security").run_as_non_root,
            Some(true)
        );
    }

    fn container(fleet: &Fleet) -> Container {
        let pod = fleet.deployment.spec.template.spec.clone().expect("pod");
        pod.containers[0].clone()
    }

    /// The pod's command line and environment, read by the mail server's real `Config`: an
    /// argument or variable it does not know fails here, not in a crash-looping pod.
    fn parse_as_the_server(fleet: &Fleet) -> Result<mailserver::config::Config, String> {
        use clap::{CommandFactory, Parser};
        let container = container(fleet);
        let known: Vec<String> = mailserver::config::Config::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        for var in container.env.as_deref().unwrap_or_default() {
            if !known.contains(&var.name) {
                return Err(format!("{} is no mailserver setting", var.name));
            }
        }
        let args = container.args.unwrap_or_default();
        mailserver::config::Config::try_parse_from(
            std::iter::once("mailserver".to_string()).chain(args.iter().cloned()),
        )
        .map_err(|e| format!("the server refuses {args:?}: {e}"))
    }

    #[test]
    fn the_pods_command_line_is_one_the_mail_server_accepts() {
        let fleet = build(&settings(), "mail", 10, &[]);
        let config = parse_as_the_server(&fleet).expect("accepted");
        let container = container(&fleet);
        // Every listener on the port the container declares and the Service targets.
        let declared: Vec<(String, i32)> = container
            .ports
            .as_ref()
            .expect("ports")
            .iter()
            .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
            .collect();
        let mut listening: Vec<(String, i32)> = config
            .listeners()
            .iter()
            .map(|l| (l.label().to_string(), i32::from(l.address.port())))
            .collect();
        listening.extend(
            config
                .https_listeners()
                .iter()
                .map(|a| ("https".to_string(), i32::from(a.port()))),
        );
        listening.push(("http".to_string(), i32::from(config.http_listen.port())));
        assert_eq!(listening, declared);
        assert!(
            config
                .listeners()
                .iter()
                .all(|l| l.address.ip().is_unspecified())
        );
        // The certificate from the mounted Secret, under cert-manager's names.
        let mount = container
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.name == "tls")
            .expect("the tls mount")
            .clone();
        assert_eq!(
            config.tls_cert.as_deref(),
            Some(std::path::Path::new(&format!(
                "{}/tls.crt",
                mount.mount_path
            )))
        );
        assert_eq!(
            config.tls_key.as_deref(),
            Some(std::path::Path::new(&format!(
                "{}/tls.key",
                mount.mount_path
            )))
        );
        let pod = fleet.deployment.spec.template.spec.clone().expect("pod");
        let volume = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "tls");
        assert_eq!(
            volume.and_then(|v| v.secret?.secret_name).as_deref(),
            Some("mailserver-tls")
        );
        assert_eq!(config.hostname, "mail.example.net");
        assert_eq!(config.s3_endpoint.as_deref(), Some("http://garage:3900"));
        assert!(config.policy().proxy_trusted.is_empty());
        assert!(
            container
                .lifecycle
                .and_then(|l| l.pre_stop?.sleep)
                .is_some()
        );

        // The check can fail: an argument the server does not know.
        let mut broken = fleet.clone();
        if let Some(pod) = broken.deployment.spec.template.spec.as_mut() {
            pod.containers[0]
                .args
                .get_or_insert_default()
                .push("--smtp-listen=0.0.0.0:25".to_string());
        }
        let err = parse_as_the_server(&broken).expect_err("an unknown flag was accepted");
        assert!(err.contains("--smtp-listen"), "{err}");
        let mut bad_env = fleet.clone();
        if let Some(pod) = bad_env.deployment.spec.template.spec.as_mut() {
            pod.containers[0].env.get_or_insert_default().push(EnvVar {
                name: "MAIL_SMTP_LISTEN".to_string(),
                value: Some("0.0.0.0:2525".to_string()),
                ..EnvVar::default()
            });
        }
        assert!(parse_as_the_server(&bad_env).is_err());
    }

    #[test]
    fn proxy_protocol_from_the_settings_reaches_the_pods_and_the_service() {
        let s = Settings {
            proxy_trusted: Some("10.0.0.0/8,192.168.0.0/16".to_string()),
            ..settings()
        };
        let fleet = build(&s, "mail", 10, &[]);
        let config = parse_as_the_server(&fleet).expect("accepted");
        assert!(!config.policy().proxy_trusted.is_empty());
        let spec = fleet.service.spec.expect("spec");
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        // A network the server cannot parse is caught here too.
        let bad = build(
            &Settings {
                proxy_trusted: Some("10.0.0.0/99".to_string()),
                ..settings()
            },
            "mail",
            10,
            &[],
        );
        let err = parse_as_the_server(&bad).expect_err("a bad network was accepted");
        assert!(err.contains("--proxy-trusted"), "{err}");
    }

    #[test]
    fn an_hpa_replaces_the_replica_rule() {
        let s = Settings {
            hpa_cpu_percent: Some(70),
            min_replicas: 2,
            max_replicas: 8,
            ..settings()
        };
        let fleet = build(&s, "mail", 5000, &[]);
        assert_eq!(fleet.deployment.spec.replicas, None);
        let hpa = fleet.hpa.as_ref().expect("an HPA");
        assert_eq!(hpa.spec.min_replicas, Some(2));
        assert_eq!(hpa.spec.max_replicas, 8);
        assert_eq!(hpa.spec.scale_target_ref.name, NAME);
        let metric = &hpa.spec.metrics.as_ref().expect("metrics")[0];
        let target = &metric.resource.as_ref().expect("cpu").target;
        assert_eq!(target.average_utilization, Some(70));
        assert_eq!(fleet.replicas(), 2);
        // Utilisation is relative to the request, so there is one.
        let resources = container(&fleet).resources.expect("resources");
        assert!(resources.requests.expect("requests").contains_key("cpu"));
        assert_eq!(build(&settings(), "mail", 5000, &[]).hpa, None);
    }

    #[test]
    fn a_certificate_names_the_host_and_each_domains_https_hosts() {
        let s = Settings {
            certificate_issuer: Some("letsencrypt".to_string()),
            ..settings()
        };
        let domains = ["a.example".to_string(), "b.example".to_string()];
        let fleet = build(&s, "mail", 1, &domains);
        let certificate = fleet.certificate.expect("a Certificate");
        assert_eq!(certificate["kind"], "Certificate");
        assert_eq!(certificate["spec"]["secretName"], "mailserver-tls");
        assert_eq!(certificate["spec"]["issuerRef"]["name"], "letsencrypt");
        assert_eq!(certificate["spec"]["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(
            certificate["spec"]["dnsNames"],
            serde_json::json!([
                "mail.example.net",
                "mta-sts.a.example",
                "autoconfig.a.example",
                "mta-sts.b.example",
                "autoconfig.b.example"
            ])
        );
        assert_eq!(build(&settings(), "mail", 1, &domains).certificate, None);
    }
}
