//! The CRDs' `x-kubernetes-validations` evaluated, not only present: every rule is compiled
//! with a CEL interpreter (the `cel` crate, with the strings extension Kubernetes enables) and
//! run the way the API server runs it — at its node, for each value there, transition rules
//! (`oldSelf`) only on an update that had the value — against good and bad objects. Each rule
//! must refuse at least one bad object, so a broken rule fails here.

use std::collections::BTreeSet;
use std::sync::Arc;

use cel::{Context, Env, Program};
use serde_json::{Value, json};

/// One step from a schema node to a child: a property, or every item of a list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Field(String),
    Items,
}

#[derive(Debug)]
struct Rule {
    kind: String,
    path: Vec<Step>,
    rule: String,
    message: String,
}

impl Rule {
    fn transition(&self) -> bool {
        self.rule.contains("oldSelf")
    }
}

fn env() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .expect("the strings extension");
    Arc::new(env)
}

/// Every rule of every generated CRD, with the path of its node from the object's root.
fn rules() -> Vec<Rule> {
    let mut out = Vec::new();
    for (_, yaml) in mail_resources::crd_files() {
        let crd: Value = serde_yaml::from_str(&yaml).expect("CRD YAML");
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .expect("kind")
            .to_string();
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            collect(
                &kind,
                &version["schema"]["openAPIV3Schema"],
                &mut Vec::new(),
                &mut out,
            );
        }
    }
    out
}

fn collect(kind: &str, node: &Value, path: &mut Vec<Step>, out: &mut Vec<Rule>) {
    for validation in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push(Rule {
            kind: kind.to_string(),
            path: path.clone(),
            rule: validation["rule"].as_str().expect("rule").to_string(),
            message: validation["message"].as_str().unwrap_or("").to_string(),
        });
    }
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        path.push(Step::Field(name.clone()));
        collect(kind, child, path, out);
        path.pop();
    }
    if node["items"].is_object() {
        path.push(Step::Items);
        collect(kind, &node["items"], path, out);
        path.pop();
    }
}

/// The values at `path` in `object` (none when a field on the way is absent).
fn at<'a>(object: &'a Value, path: &[Step]) -> Vec<&'a Value> {
    let Some((step, rest)) = path.split_first() else {
        return vec![object];
    };
    match step {
        Step::Field(name) => object
            .get(name)
            .filter(|v| !v.is_null())
            .map_or_else(Vec::new, |v| at(v, rest)),
        Step::Items => object
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|item| at(item, rest))
            .collect(),
    }
}

fn evaluate(
    env: &Arc<Env>,
    program: &Program,
    this: &Value,
    old: Option<&Value>,
) -> Result<bool, String> {
    let mut ctx = Context::with_env(env.clone());
    ctx.add_variable_from_value("self", cel::to_value(this).map_err(|e| e.to_string())?);
    if let Some(old) = old {
        ctx.add_variable_from_value("oldSelf", cel::to_value(old).map_err(|e| e.to_string())?);
    }
    match program.execute(&ctx).map_err(|e| e.to_string())? {
        cel::Value::Bool(ok) => Ok(ok),
        other => Err(format!("not a bool: {other:?}")),
    }
}

/// The messages of the rules `object` (a `kind`, updated from `old` if given) breaks, and the
/// rules that broke. A rule that does not compile or evaluate is a test failure.
fn violations(kind: &str, object: &Value, old: Option<&Value>) -> (Vec<String>, Vec<String>) {
    let env = env();
    let (mut messages, mut broken) = (Vec::new(), Vec::new());
    for rule in rules().iter().filter(|r| r.kind == kind) {
        let program = env
            .compile(&rule.rule)
            .unwrap_or_else(|e| panic!("{kind}: rule {:?} does not compile: {e:?}", rule.rule));
        let values = at(object, &rule.path);
        for (i, this) in values.iter().enumerate() {
            let previous = match (rule.transition(), old) {
                (false, _) => None,
                // Kubernetes runs a transition rule only on an update that had the value.
                (true, None) => continue,
                (true, Some(old)) => match at(old, &rule.path).get(i) {
                    Some(previous) => Some(*previous),
                    None => continue,
                },
            };
            let ok = evaluate(&env, &program, this, previous)
                .unwrap_or_else(|e| panic!("{kind}: rule {:?} failed to run: {e}", rule.rule));
            if !ok {
                messages.push(rule.message.clone());
                broken.push(rule.rule.clone());
            }
        }
    }
    (messages, broken)
}

fn domain(spec: Value) -> Value {
    json!({"apiVersion": "mail.kubemail.io/v1alpha1", "kind": "MailDomain",
           "metadata": {"name": "d"}, "spec": spec})
}

fn mailbox(spec: Value) -> Value {
    json!({"apiVersion": "mail.kubemail.io/v1alpha1", "kind": "Mailbox",
           "metadata": {"name": "m"}, "spec": spec})
}

fn dkim(spec: Value) -> Value {
    json!({"apiVersion": "mail.kubemail.io/v1alpha1", "kind": "DkimKey",
           "metadata": {"name": "k"}, "spec": spec})
}

#[test]
fn every_rule_accepts_good_objects_and_refuses_bad_ones() {
    let mut fired: BTreeSet<String> = BTreeSet::new();
    let mut expect = |kind: &str, object: Value, old: Option<Value>, want: &[&str]| {
        let (messages, broken) = violations(kind, &object, old.as_ref());
        assert_eq!(messages, want, "{kind}: {object}");
        fired.extend(broken);
    };

    // MailDomain: a catch-all in the domain itself, compared without case; the domain is fixed.
    let good = domain(json!({"domain": "example.com", "catchAll": "All@Example.COM"}));
    expect("MailDomain", good.clone(), None, &[]);
    expect(
        "MailDomain",
        domain(json!({"domain": "example.com"})),
        None,
        &[],
    );
    expect(
        "MailDomain",
        domain(json!({"domain": "example.com", "catchAll": "all@other.org"})),
        None,
        &["catchAll must be an address in the domain itself"],
    );
    // A look-alike suffix is not the domain.
    expect(
        "MailDomain",
        domain(json!({"domain": "example.com", "catchAll": "all@notexample.com"})),
        None,
        &["catchAll must be an address in the domain itself"],
    );
    expect("MailDomain", good.clone(), Some(good.clone()), &[]);
    expect(
        "MailDomain",
        domain(json!({"domain": "example.org", "catchAll": "all@example.org"})),
        Some(good),
        &["domain is immutable; create another MailDomain"],
    );

    // Mailbox: its own address is no alias of it, in any case.
    let good = mailbox(json!({"address": "alice@example.com", "aliases": ["info@example.com"]}));
    expect("Mailbox", good, None, &[]);
    expect(
        "Mailbox",
        mailbox(json!({"address": "alice@example.com"})),
        None,
        &[],
    );
    expect(
        "Mailbox",
        mailbox(
            json!({"address": "alice@example.com", "aliases": ["x@example.com", "ALICE@example.com"]}),
        ),
        None,
        &["a mailbox cannot list its own address as an alias"],
    );

    // DkimKey: domain and selector fixed once made; the rest may change.
    let good = dkim(json!({"domain": "example.com", "selector": "s1", "rotateAfter": "90d"}));
    expect("DkimKey", good.clone(), None, &[]);
    expect(
        "DkimKey",
        dkim(json!({"domain": "example.com", "selector": "s1", "active": false})),
        Some(good.clone()),
        &[],
    );
    expect(
        "DkimKey",
        dkim(json!({"domain": "example.org", "selector": "s2"})),
        Some(good),
        &[
            "domain is immutable",
            "selector is immutable; create another DkimKey",
        ],
    );

    // Every rule the CRDs have refused something above: none is dead or always true.
    let all: BTreeSet<String> = rules().into_iter().map(|r| r.rule).collect();
    let silent: Vec<&String> = all.difference(&fired).collect();
    assert!(
        silent.is_empty(),
        "rules never refusing a bad object: {silent:?}"
    );
}

#[test]
fn a_broken_rule_is_caught() {
    // The same shape of rule with a mistake a reviewer could miss: it accepts the bad object.
    let env = env();
    let program = env
        .compile("!has(self.catchAll) || self.catchAll.lowerAscii().endsWith(self.domain)")
        .expect("compiles");
    let bad = json!({"domain": "example.com", "catchAll": "all@notexample.com"});
    assert_eq!(evaluate(&env, &program, &bad, None), Ok(true));
    let real = rules()
        .into_iter()
        .find(|r| r.kind == "MailDomain" && r.rule.contains("catchAll"))
        .expect("the catch-all rule");
    let program = env.compile(&real.rule).expect("compiles");
    assert_eq!(evaluate(&env, &program, &bad, None), Ok(false));
    // And a rule that does not compile is reported as such.
    assert!(env.compile("self.domain ==").is_err());
}
