//! The fleet's objects, from the settings and the mailbox count. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
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
const HTTP_PORT: i32 = 8080;

#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub deployment: Deployment,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
}

impl Fleet {
    pub fn replicas(&self) -> i32 {
        self.deployment.spec.replicas.unwrap_or(0)
    }
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

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
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

pub fn build(settings: &Settings, namespace: &str, mailboxes: i64) -> Fleet {
    let mut env_vars = vec![
        EnvVar {
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
        },
        env("MAIL_HOSTNAME", &settings.hostname),
        env("MAIL_BUCKET_PREFIX", &settings.bucket_prefix),
        // The listeners the server has today; the others' ports are declared for when it does.
        env("MAIL_SMTP_LISTEN", "0.0.0.0:2525"),
        env("MAIL_IMAP_LISTEN", "0.0.0.0:2143"),
        env("MAIL_POP3_LISTEN", "0.0.0.0:2110"),
        env("MAIL_HTTP_LISTEN", &format!("0.0.0.0:{HTTP_PORT}")),
    ];
    if let Some((endpoint, region, key_id)) = &settings.s3 {
        env_vars.extend([
            env("MAIL_S3_ENDPOINT", endpoint),
            env("MAIL_S3_REGION", region),
            env("MAIL_S3_ACCESS_KEY_ID", key_id),
            env(
                "MAIL_S3_SECRET_ACCESS_KEY_FILE",
                "/var/run/secrets/mail-s3/secret-access-key",
            ),
        ]);
    }
    let mut ports: Vec<ContainerPort> = PORTS
        .iter()
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
        env: Some(env_vars),
        ports: Some(ports),
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
        volume_mounts: Some(vec![VolumeMount {
            name: "s3".to_string(),
            mount_path: "/var/run/secrets/mail-s3".to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        automount_service_account_token: Some(false),
        // The server drains on SIGTERM (421 to SMTP sessions, 10 s for the rest).
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
        volumes: Some(vec![Volume {
            name: "s3".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(settings.s3_secret.clone()),
                optional: Some(settings.s3.is_none()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    let deployment = Deployment {
        metadata: meta(namespace),
        spec: DeploymentSpec {
            replicas: Some(replicas(settings, mailboxes)),
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
            // Keeps the client's address (SPF, bans, rate limits) without PROXY headers.
            external_traffic_policy: Some("Local".to_string()),
            selector: Some(selector()),
            ports: Some(
                PORTS
                    .iter()
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
    }
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
        let fleet = build(&settings(), "mail", 10);
        let spec = fleet.service.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        let ports: Vec<i32> = spec.ports.expect("ports").iter().map(|p| p.port).collect();
        assert_eq!(ports, [25, 465, 587, 143, 993, 110, 995]);
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
}
