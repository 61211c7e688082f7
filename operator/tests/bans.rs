//! `mail-operator bans list|lift` as an operator runs it, on a real PostgreSQL holding the
//! login guard's tables; a lift notifies the mail servers' channel.

use std::process::Output;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::process::Command;

async fn bans(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mail-operator"))
        .arg("bans")
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .await
        .expect("run mail-operator")
}

async fn ok(url: &str, args: &[&str]) -> String {
    let out = bans(url, args).await;
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn list_and_lift() {
    let url = tokio::task::spawn_blocking(mail_testkit::fresh_database)
        .await
        .unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    mail_provision::migrate(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO login_bans (network, until, repeats, reason) VALUES
           ('192.0.2.7/32', now() + interval '600 seconds', 2, 'ten failures'),
           ('2001:db8:1:2::/64', now() + interval '60 seconds', 1, 'v6'),
           ('198.51.100.1/32', now() - interval '10 seconds', 3, 'ended')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO login_failures (kind, subject) VALUES
           ('account', 'alice@example.test'), ('account', 'alice@example.test'),
           ('account', 'alice@example.test'), ('account', 'bob@example.test'),
           ('network', '192.0.2.7/32'), ('network', '192.0.2.7/32')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let listed = ok(&url, &["list"]).await;
    let lines: Vec<&str> = listed.lines().collect();
    assert!(lines[0].starts_with("NETWORK"), "{listed}");
    assert!(
        lines[1].starts_with("192.0.2.7/32 "),
        "longest first: {listed}"
    );
    assert!(lines[1].contains("ten failures"), "{listed}");
    assert!(lines[2].starts_with("2001:db8:1:2::/64 "), "{listed}");
    assert!(
        !listed.contains("198.51.100.1"),
        "ended bans hidden: {listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["alice@example.test", "3"]),
        "{listed}"
    );
    let all = ok(&url, &["list", "--all"]).await;
    assert!(all.contains("198.51.100.1/32"), "{all}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&url, &["list", "--json"]).await).unwrap();
    assert_eq!(json["bans"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(json["bans"][0]["repeats"], 2, "{json}");
    assert_eq!(
        json["accounts"][0]["account"], "alice@example.test",
        "{json}"
    );
    assert_eq!(json["accounts"][0]["failures"], 3, "{json}");

    // A lift by network covers the address in it and tells the pods.
    let mut listener = PgListener::connect(&url).await.unwrap();
    listener.listen("login_bans").await.unwrap();
    let lifted = ok(&url, &["lift", "192.0.2.0/24"]).await;
    assert_eq!(lifted.trim(), "lifted 1 ban(s), forgot 2 failed login(s)");
    tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("the pods are notified")
        .unwrap();
    let lifted = ok(&url, &["lift", "2001:db8:1:2::99"]).await;
    assert_eq!(lifted.trim(), "lifted 1 ban(s), forgot 0 failed login(s)");
    let left = ok(&url, &["list", "--json"]).await;
    assert!(left.contains(r#""bans":[]"#), "{left}");

    let lifted = ok(&url, &["lift", "Alice@Example.test"]).await;
    assert_eq!(lifted.trim(), "lifted 0 ban(s), forgot 3 failed login(s)");

    let bad = bans(&url, &["lift", "10.0.0.0/99"]).await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("bad prefix length"),
        "{bad:?}"
    );
}
