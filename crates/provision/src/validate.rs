//! Checks a desired state before anything is applied. Pure: no I/O. Every problem is reported,
//! each saying which object and field is wrong and what to do.

use std::collections::{BTreeMap, BTreeSet};

use mail_resources::parse_quantity;

use crate::desired::{Desired, object_id};
use crate::names::{bucket_name, check_address, check_domain};

/// Every problem found, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid desired state:\n  {}", .0.join("\n  "))]
pub struct ValidationErrors(pub Vec<String>);

/// Validates `desired` as a whole, for buckets named with `bucket_prefix`.
pub fn validate(desired: &Desired, bucket_prefix: &str) -> Result<(), ValidationErrors> {
    let mut problems = Vec::new();

    // Domains first: the other kinds refer to them.
    let mut hosted: BTreeMap<&str, String> = BTreeMap::new();
    let mut buckets: BTreeMap<String, &str> = BTreeMap::new();
    for domain in &desired.domains {
        let id = format!("MailDomain {}", object_id(&domain.metadata));
        let name = domain.spec.domain.as_str();
        if let Err(e) = check_domain(name) {
            problems.push(format!("{id}: spec.domain {name:?} {e}"));
            continue;
        }
        if let Some(other) = hosted.insert(name, id.clone()) {
            problems.push(format!(
                "{id}: domain {name} is already hosted by {other}; delete one"
            ));
            continue;
        }
        let bucket = bucket_name(bucket_prefix, name);
        if let Some(other) = buckets.insert(bucket.clone(), name) {
            problems.push(format!(
                "{id}: domains {other} and {name} would share bucket {bucket}; rename one"
            ));
        }
    }

    // Every address a mailbox answers to, and who claims it.
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |address: String, who: String, problems: &mut Vec<String>| {
        if let Some(first) = claimed.get(&address) {
            problems.push(format!(
                "{who}: address {address} is already used by {first}; an address belongs to one \
                 mailbox"
            ));
        } else {
            claimed.insert(address, who);
        }
    };
    for mailbox in &desired.mailboxes {
        let id = format!("Mailbox {}", object_id(&mailbox.metadata));
        let spec = &mailbox.spec;
        let address = spec.address.to_ascii_lowercase();
        match check_address(&address) {
            Err(e) => problems.push(format!("{id}: spec.address {:?} {e}", spec.address)),
            Ok((_, domain)) if !hosted.contains_key(domain) => problems.push(format!(
                "{id}: spec.address {address}: domain {domain} is not hosted by any MailDomain; \
                 add one"
            )),
            Ok(_) => claim(
                address.clone(),
                format!("{id} (spec.address)"),
                &mut problems,
            ),
        }
        for (i, alias) in spec.aliases.iter().enumerate() {
            let alias = alias.to_ascii_lowercase();
            match check_address(&alias) {
                Err(e) => problems.push(format!("{id}: spec.aliases[{i}] {alias:?} {e}")),
                Ok((_, domain)) if !hosted.contains_key(domain) => problems.push(format!(
                    "{id}: spec.aliases[{i}] {alias}: domain {domain} is not hosted by any \
                     MailDomain; add one or remove the alias"
                )),
                Ok(_) => claim(alias, format!("{id} (spec.aliases[{i}])"), &mut problems),
            }
        }
        match parse_quantity(&spec.quota) {
            Err(e) => problems.push(format!("{id}: spec.quota: {e}")),
            Ok(bytes) if i64::try_from(bytes).is_err() => {
                problems.push(format!("{id}: spec.quota {} is too large", spec.quota))
            }
            Ok(_) => {}
        }
        if let Some(reference) = &spec.password_secret_ref {
            let where_ = format!(
                "Secret {}/{}",
                crate::desired::namespace_of(&mailbox.metadata),
                reference.name
            );
            match desired.password_of(mailbox) {
                None if !desired.secrets.contains_key(&(
                    crate::desired::namespace_of(&mailbox.metadata).to_string(),
                    reference.name.clone(),
                )) =>
                {
                    problems.push(format!(
                        "{id}: spec.passwordSecretRef names {where_}, which does not exist; \
                         create it"
                    ))
                }
                None => problems.push(format!(
                    "{id}: {where_} has no key {:?}; add it or fix spec.passwordSecretRef.key",
                    reference.key
                )),
                Some(password) => {
                    if let Err(e) = crate::password::check_secret_value(password) {
                        problems.push(format!("{id}: {where_} key {:?} {e}", reference.key));
                    }
                }
            }
        }
    }

    // Catch-alls need the mailboxes, so they come after them.
    for domain in &desired.domains {
        let Some(catch_all) = &domain.spec.catch_all else {
            continue;
        };
        let id = format!("MailDomain {}", object_id(&domain.metadata));
        let catch_all = catch_all.to_ascii_lowercase();
        match check_address(&catch_all) {
            Err(e) => problems.push(format!("{id}: spec.catchAll {catch_all:?} {e}")),
            Ok((_, d)) if d != domain.spec.domain => problems.push(format!(
                "{id}: spec.catchAll {catch_all} must be an address in {}",
                domain.spec.domain
            )),
            Ok(_) if !claimed.contains_key(&catch_all) => problems.push(format!(
                "{id}: spec.catchAll {catch_all} is not the address or alias of any Mailbox; \
                 create the Mailbox or fix spec.catchAll"
            )),
            Ok(_) => {}
        }
    }

    let mut selectors = BTreeSet::new();
    for key in &desired.dkim_keys {
        let id = format!("DkimKey {}", object_id(&key.metadata));
        let spec = &key.spec;
        if !hosted.contains_key(spec.domain.as_str()) {
            problems.push(format!(
                "{id}: spec.domain {} is not hosted by any MailDomain; add one",
                spec.domain
            ));
        }
        if let Err(e) = check_selector(&spec.selector) {
            problems.push(format!("{id}: spec.selector {:?} {e}", spec.selector));
        } else if !selectors.insert((spec.domain.as_str(), spec.selector.as_str())) {
            problems.push(format!(
                "{id}: selector {} of {} is defined twice; give each key its own selector",
                spec.selector, spec.domain
            ));
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(problems))
    }
}

/// A selector is one or more DNS labels (RFC 6376 3.1).
fn check_selector(selector: &str) -> Result<(), String> {
    let ok = !selector.is_empty()
        && selector.len() <= 63
        && selector.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err("must be lower-case DNS labels (a-z, 0-9, '-'), at most 63 characters".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_resources::{
        AuthSource, DkimAlgorithm, DkimKey, DkimKeySpec, MailDomain, MailDomainSpec, Mailbox,
        MailboxSpec, ReclaimPolicy, SecretKeyRef,
    };

    fn domain(name: &str, catch_all: Option<&str>) -> MailDomain {
        MailDomain::new(
            name,
            MailDomainSpec {
                domain: name.to_string(),
                reclaim_policy: ReclaimPolicy::Retain,
                catch_all: catch_all.map(str::to_string),
                dns: Default::default(),
            },
        )
    }

    fn mailbox(name: &str, address: &str, aliases: &[&str]) -> Mailbox {
        Mailbox::new(
            name,
            MailboxSpec {
                address: address.to_string(),
                display_name: None,
                quota: "1Gi".to_string(),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                auth_source: AuthSource::Local,
                password_secret_ref: Some(SecretKeyRef {
                    name: "pw".to_string(),
                    key: "password".to_string(),
                }),
            },
        )
    }

    fn key(name: &str, domain: &str, selector: &str) -> DkimKey {
        DkimKey::new(
            name,
            DkimKeySpec {
                domain: domain.to_string(),
                selector: selector.to_string(),
                algorithm: DkimAlgorithm::Ed25519,
                active: true,
                rotate_after: None,
                overlap: None,
            },
        )
    }

    fn good() -> Desired {
        let mut desired = Desired {
            domains: vec![domain("example.test", Some("alice@example.test"))],
            mailboxes: vec![
                mailbox("alice", "Alice@example.test", &["postmaster@example.test"]),
                mailbox("bob", "bob@example.test", &[]),
            ],
            dkim_keys: vec![key("k", "example.test", "default")],
            ..Desired::default()
        };
        desired.secrets.insert(
            ("default".into(), "pw".into()),
            [("password".to_string(), b"pw".to_vec())].into(),
        );
        desired
    }

    #[test]
    fn a_good_state_passes() {
        assert_eq!(validate(&good(), "mail"), Ok(()));
    }

    #[test]
    fn each_problem_is_named() {
        type Edit = fn(&mut Desired);
        let cases: &[(&str, Edit, &str)] = &[
            (
                "bad domain",
                |d| d.domains[0].spec.domain = "Example.test".into(),
                "must be lower case",
            ),
            (
                "domain twice",
                |d| d.domains.push(domain("example.test", None)),
                "already hosted by",
            ),
            (
                "bucket clash",
                |d| {
                    d.domains.push(domain("a-b.test", None));
                    d.domains.push(domain("a.b-test", None));
                },
                "would share bucket mail-a-b-test",
            ),
            (
                "catch-all outside",
                |d| d.domains[0].spec.catch_all = Some("x@other.test".into()),
                "must be an address in example.test",
            ),
            (
                "catch-all unknown",
                |d| d.domains[0].spec.catch_all = Some("nobody@example.test".into()),
                "not the address or alias of any Mailbox",
            ),
            (
                "catch-all syntax",
                |d| d.domains[0].spec.catch_all = Some("nobody".into()),
                "spec.catchAll \"nobody\"",
            ),
            (
                "address syntax",
                |d| d.mailboxes[1].spec.address = "bob".into(),
                "spec.address \"bob\"",
            ),
            (
                "address unhosted",
                |d| d.mailboxes[1].spec.address = "bob@other.test".into(),
                "domain other.test is not hosted",
            ),
            (
                "alias unhosted",
                |d| d.mailboxes[1].spec.aliases = vec!["b@other.test".into()],
                "spec.aliases[0] b@other.test: domain other.test",
            ),
            (
                "alias syntax",
                |d| d.mailboxes[1].spec.aliases = vec!["b@@x".into()],
                "spec.aliases[0]",
            ),
            (
                "alias is a mailbox",
                |d| d.mailboxes[1].spec.aliases = vec!["alice@example.test".into()],
                "address alice@example.test is already used by Mailbox default/alice",
            ),
            (
                "alias twice",
                |d| d.mailboxes[1].spec.aliases = vec!["POSTMASTER@example.test".into()],
                "postmaster@example.test is already used",
            ),
            (
                "address twice",
                |d| d.mailboxes[1].spec.address = "alice@EXAMPLE.test".into(),
                "already used by",
            ),
            (
                "quota",
                |d| d.mailboxes[0].spec.quota = "lots".into(),
                "spec.quota",
            ),
            (
                "huge quota",
                |d| d.mailboxes[0].spec.quota = "9000Pi".into(),
                "too large",
            ),
            (
                "no secret",
                |d| d.secrets.clear(),
                "Secret default/pw, which does not exist",
            ),
            (
                "no key",
                |d| {
                    d.mailboxes[0]
                        .spec
                        .password_secret_ref
                        .as_mut()
                        .unwrap()
                        .key = "pass".into()
                },
                "has no key \"pass\"",
            ),
            (
                "bad hash",
                |d| {
                    d.secrets.values_mut().for_each(|s| {
                        s.insert("password".into(), b"$argon2id$junk".to_vec());
                    })
                },
                "not a PHC hash",
            ),
            (
                "dkim unhosted",
                |d| d.dkim_keys[0].spec.domain = "other.test".into(),
                "DkimKey default/k: spec.domain other.test is not hosted",
            ),
            (
                "dkim selector",
                |d| d.dkim_keys[0].spec.selector = "Bad_Sel".into(),
                "spec.selector \"Bad_Sel\"",
            ),
            (
                "dkim twice",
                |d| d.dkim_keys.push(key("k2", "example.test", "default")),
                "defined twice",
            ),
        ];
        for (what, edit, want) in cases {
            let mut desired = good();
            edit(&mut desired);
            let err = validate(&desired, "mail").expect_err(what);
            let text = err.to_string();
            assert!(text.contains(want), "{what}: {text}");
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let mut desired = good();
        desired.mailboxes[0].spec.quota = "x".into();
        desired.dkim_keys[0].spec.domain = "nope.test".into();
        let ValidationErrors(problems) = validate(&desired, "mail").expect_err("two problems");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
