//! fresh_database() gives distinct, empty, reachable databases in one shared cluster.

use sqlx::{Connection, PgConnection};

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

#[tokio::test]
async fn a_fresh_database_is_reachable_and_empty() {
    let url = mail_testkit::fresh_database();
    assert!(url.starts_with("postgres://postgres@127.0.0.1:"), "{url}");
    let mut conn = connect(&url).await;
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(url.ends_with(&format!("/{name}")), "{url} vs {name}");
    assert!(name.starts_with("t_"), "{name}");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 0);
}

#[tokio::test]
async fn two_calls_give_two_isolated_databases_in_one_cluster() {
    let a = mail_testkit::fresh_database();
    let b = mail_testkit::fresh_database();
    assert_ne!(a, b);
    let (a_port, b_port) = (a.rsplit_once('/').unwrap().0, b.rsplit_once('/').unwrap().0);
    assert_eq!(a_port, b_port, "one shared cluster");

    let mut conn_a = connect(&a).await;
    sqlx::query("CREATE TABLE only_in_a (v int)")
        .execute(&mut conn_a)
        .await
        .unwrap();
    let mut conn_b = connect(&b).await;
    let err = sqlx::query("SELECT v FROM only_in_a")
        .fetch_all(&mut conn_b)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn many_parallel_callers_get_distinct_databases() {
    let urls: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(mail_testkit::fresh_database))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: std::collections::HashSet<_> = urls.iter().collect();
    assert_eq!(distinct.len(), urls.len());
}
