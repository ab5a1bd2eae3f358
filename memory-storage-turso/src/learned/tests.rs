use super::*;

/// A new in-memory database at the latest schema (the handle keeps it alive).
async fn migrated() -> (libsql::Database, libsql::Connection) {
    let db = libsql::Builder::new_local(":memory:")
        .build()
        .await
        .unwrap();
    let conn = db.connect().unwrap();
    crate::schema::migrate(&conn, crate::SCHEMA_VERSION)
        .await
        .unwrap();
    (db, conn)
}

/// The steps of `sql`'s query plan.
async fn plan(conn: &libsql::Connection, sql: &str, values: Vec<Value>) -> Vec<String> {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut rows = conn.query(&explain, values).await.unwrap();
    let mut steps = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        steps.push(row.get::<String>(3).unwrap());
    }
    steps
}

/// The plan of a context query: the context index sought on the namespace and every
/// context field given, and the counter index for a context too large to sort.
#[tokio::test]
async fn a_context_query_seeks_its_context_and_falls_back_to_the_counter_index() {
    let (_db, conn) = migrated().await;
    let q = LearnedQuery {
        domain: Some("web_api".into()),
        language: Some("rust".into()),
        task_type: Some(TaskType::Debugging),
        ..LearnedQuery::default()
    };
    for (t, rank) in [
        (Pattern::TABLE, Pattern::RANK),
        (Heuristic::TABLE, Heuristic::RANK),
        (FailureLesson::TABLE, FailureLesson::RANK),
    ] {
        let sql = context_page_sql(t, rank, "ns", &q, &|_| {});
        let steps = plan(&conn, &sql.text, sql.values).await;
        let sought = format!("INDEX {t}_by_context (ns=? AND <expr>=? AND <expr>=? AND <expr>=?)");
        assert!(steps.iter().any(|s| s.ends_with(&sought)), "{steps:?}");
        let ranked = format!("INDEX {t}_by_{rank} (ns=?)");
        assert!(steps.iter().any(|s| s.ends_with(&ranked)), "{steps:?}");
    }
}

#[tokio::test]
async fn the_active_heuristic_of_a_key_is_sought_in_its_own_index() {
    let (_db, conn) = migrated().await;
    let sql = "SELECT body FROM heuristics \
               WHERE ns = ?1 AND condition_key IN (?2, ?3) AND status = 'active' \
               ORDER BY +id";
    let values = vec![text("ns"), text("a"), text("b")];
    let steps = plan(&conn, sql, values).await;
    let sought = "INDEX heuristics_active_by_condition (ns=? AND condition_key=?)";
    assert!(steps.iter().any(|s| s.ends_with(sought)), "{steps:?}");
}

#[test]
fn an_update_assigns_no_identity_column() {
    let identity: [(String, &[&str]); 3] = [
        (
            on_conflict::<Pattern>(),
            &["kind", "task_type", "domain", "language"],
        ),
        (
            on_conflict::<Heuristic>(),
            &["condition_key", "task_type", "domain", "language"],
        ),
        (
            on_conflict::<FailureLesson>(),
            &[
                "failed_tool",
                "error_class",
                "task_type",
                "domain",
                "language",
            ],
        ),
    ];
    for (clause, columns) in identity {
        for col in columns {
            assert!(!clause.contains(&format!(" {col} =")), "{col} in {clause}");
        }
        for col in ["status", "last_seen", "body"] {
            assert!(
                clause.contains(&format!("{col} = excluded.{col}")),
                "{clause}"
            );
        }
    }
    assert!(on_conflict::<Pattern>().contains("occurrences = excluded.occurrences"));
    assert!(on_conflict::<Heuristic>().contains("against = excluded.against"));
    assert!(on_conflict::<Heuristic>().contains("changed_seq = excluded.changed_seq"));
    assert!(!on_conflict::<FailureLesson>().contains("changed_seq"));
}
