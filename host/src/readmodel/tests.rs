//! The read model's tests. The shared suite is written once against
//! [`ReadModelDb`] and runs on both backends (`on_sqlite::…`,
//! `on_postgres::…`); what only PostgreSQL has (fences, removal, statement
//! timeouts, its planner) is tested after it. PostgreSQL is a real server,
//! started once for the test binary (`crate::pg::test_pg`).

use std::ops::Deref;

use super::*;
use crate::pg::test_pg::TestDatabase;

/// A read model for one test, and what must outlive it.
struct TestReadModel {
    db: ReadModelDb,
    /// Dropped after `db`.
    keep: Keep,
}

enum Keep {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(Box<TestDatabase>),
}

impl Deref for TestReadModel {
    type Target = ReadModelDb;

    fn deref(&self) -> &ReadModelDb {
        &self.db
    }
}

impl TestReadModel {
    /// The test database, for PostgreSQL-only tests.
    fn database(&self) -> &TestDatabase {
        match &self.keep {
            Keep::Postgres(database) => database,
            Keep::Sqlite(_) => panic!("not a PostgreSQL read model"),
        }
    }
}

fn sqlite() -> TestReadModel {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = ReadModelDb::open(&dir.path().join("0001-x.sqlite")).expect("open");
    TestReadModel { db, keep: Keep::Sqlite(dir) }
}

/// A read model in a fresh database, whose lease this host holds (epoch 0, the row's first).
fn postgres() -> TestReadModel {
    let database = TestDatabase::new();
    let db = ReadModelDb::open_postgres(&database.pg, "orders", "0001-x").expect("open");
    db.set_fence(Some(0));
    TestReadModel { db, keep: Keep::Postgres(Box::new(database)) }
}

/// One `#[test]` per backend for each function of the shared suite.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $name() { super::$name(&super::sqlite()) })*
        }
        mod on_postgres {
            $(#[test] fn $name() { super::$name(&super::postgres()) })*
        }
    };
}

on_both_backends!(
    a_number_filters_alike_however_a_guest_wrote_it,
    a_slow_read_does_not_hold_a_lookup_by_key,
    keyset_pages_walk_an_ordered_listing_exactly_once_in_both_directions,
    a_batch_its_checkpoint_and_a_dead_letter_commit_together,
    neither_a_missing_field_nor_json_null_passes_not_equal,
    a_declared_index_is_created_once_and_listed,
    a_cursor_of_the_other_backend_is_refused,
);

fn batch(docs: &[(&str, &str, Option<&str>)]) -> Writes {
    docs.iter().map(|(c, k, doc)| ((c.to_string(), k.to_string()), doc.map(str::to_owned))).collect()
}

/// The JSON value of a document (PostgreSQL gives back its own spelling of it).
fn json(doc: Option<String>) -> Option<serde_json::Value> {
    doc.map(|doc| serde_json::from_str(&doc).expect("a document is JSON"))
}

fn a_number_filters_alike_however_a_guest_wrote_it(db: &ReadModelDb) {
    let writes = batch(&[
        ("orders", "int", Some(r#"{"total":198}"#)),
        ("orders", "real", Some(r#"{"total":198.0}"#)),
        ("orders", "exp", Some(r#"{"total":1.98e2}"#)),
        ("orders", "other", Some(r#"{"total":199}"#)),
    ]);
    db.commit(&writes, Checkpoint { position: 1, events: 1 }).expect("commit");
    let filter = |op, value| Query { filters: vec![Filter { path: "total".into(), op, value }], ..Query::default() };
    assert_eq!(db.count("orders", &filter(Op::Eq, FilterValue::Integer(198))).expect("count"), 3);
    assert_eq!(db.count("orders", &filter(Op::Eq, FilterValue::Real(198.0))).expect("count"), 3);
    assert_eq!(db.count("orders", &filter(Op::Ge, FilterValue::Integer(198))).expect("count"), 4);
    assert_eq!(db.count("orders", &filter(Op::Gt, FilterValue::Real(198.5))).expect("count"), 1);
    assert_eq!(db.count("orders", &filter(Op::Ne, FilterValue::Integer(198))).expect("count"), 1);
}

fn a_slow_read_does_not_hold_a_lookup_by_key(db: &ReadModelDb) {
    use std::sync::mpsc;
    db.commit(&batch(&[("c", "k", Some(r#"{"n":1}"#))]), Checkpoint { position: 1, events: 1 }).expect("commit");
    let (started, running) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let slow = scope.spawn(move || {
            db.while_reading(move || {
                started.send(()).expect("send");
                released.recv().expect("released");
            })
        });
        running.recv().expect("the slow read holds its connection");
        let (answer, answered) = mpsc::channel();
        scope.spawn(move || answer.send(db.document("c", "k").expect("lookup")).expect("send"));
        let doc = answered.recv_timeout(std::time::Duration::from_secs(10));
        release.send(()).expect("release");
        let doc = doc.expect("answered while the slow read still runs");
        assert_eq!(json(doc), Some(serde_json::json!({"n": 1})));
        slow.join().expect("thread").expect("read");
    });
}

fn keyset_pages_walk_an_ordered_listing_exactly_once_in_both_directions(db: &ReadModelDb) {
    let docs = [
        ("a", r#"{}"#),
        ("b", r#"{"v":null}"#),
        ("c", r#"{"v":1}"#),
        ("d", r#"{"v":1.0}"#),
        ("e", r#"{"v":2.5}"#),
        ("e2", r#"{"v":0.30000000000000004}"#),
        ("e3", r#"{"v":0.3}"#),
        ("f", r#"{"v":"text"}"#),
        ("g", r#"{"v":true}"#),
        ("h", r#"{}"#),
        ("i", r#"{"v":{"w":[1,2]}}"#),
    ];
    let writes = docs.iter().map(|(key, doc)| ("c", *key, Some(*doc))).collect::<Vec<_>>();
    db.commit(&batch(&writes), Checkpoint { position: 1, events: 1 }).expect("commit");
    for descending in [false, true] {
        let order = Some(Order { path: "v".into(), descending });
        let all = db.query("c", &Query { order: order.clone(), ..Query::default() }).expect("all at once");
        assert_eq!(all.len(), docs.len());
        let mut walked = Vec::new();
        let mut page = Page::AfterKey(None);
        loop {
            let query = Query { order: order.clone(), limit: 1, page: page.clone(), ..Query::default() };
            let items = db.query("c", &query).expect("a page");
            let Some(last) = items.last() else { break };
            page = Page::After { value: last.sort_value.clone(), key: last.key.clone() };
            walked.extend(items);
        }
        let keys = |items: &[Item]| items.iter().map(|i| i.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&walked), keys(&all), "descending: {descending}");
        let edge = if descending { all.last() } else { all.first() };
        assert_eq!(edge.map(|i| i.key.as_str()), Some("a"), "missing fields first ascending, last descending");
    }
}

fn a_batch_its_checkpoint_and_a_dead_letter_commit_together(db: &ReadModelDb) {
    assert_eq!(db.checkpoint().expect("checkpoint"), None, "no batch yet");
    let first = batch(&[("c", "a", Some(r#"{"n":1}"#)), ("c", "b", Some(r#"{"n":2}"#)), ("d", "a", Some("[]"))]);
    db.commit(&first, Checkpoint { position: 10, events: 3 }).expect("commit");
    assert_eq!(db.checkpoint().expect("checkpoint"), Some(Checkpoint { position: 10, events: 3 }));
    let second = batch(&[("c", "a", None), ("c", "b", Some(r#"{"n":3}"#)), ("c", "z", None)]);
    db.commit(&second, Checkpoint { position: 20, events: 4 }).expect("commit");
    assert_eq!(db.document("c", "a").expect("lookup"), None, "deleted");
    assert_eq!(json(db.document("c", "b").expect("lookup")), Some(serde_json::json!({"n": 3})), "replaced");
    assert_eq!(json(db.get("d", "a").expect("the module's read")), Some(serde_json::json!([])));
    let listed = db.list("c", None, 10).expect("list");
    assert_eq!(listed.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["b"]);

    let letter = |position| DeadLetter {
        position,
        stream: "order-1".into(),
        revision: 7,
        event_type: "OrderPlaced".into(),
        error: "invalid event: x".into(),
    };
    db.commit_dead_letter(&letter(30), Checkpoint { position: 30, events: 5 }).expect("dead letter");
    db.commit_dead_letter(&letter(40), Checkpoint { position: 40, events: 6 }).expect("dead letter");
    assert_eq!(db.checkpoint().expect("checkpoint"), Some(Checkpoint { position: 40, events: 6 }));
    assert_eq!(db.dead_letter_count().expect("count"), 2);
    assert_eq!(db.dead_letters(None, 10).expect("letters"), [letter(30), letter(40)]);
    assert_eq!(db.dead_letters(Some(30), 10).expect("letters"), [letter(40)]);
    assert_eq!(db.dead_letters(None, 1).expect("letters"), [letter(30)]);
    assert_eq!(db.dead_letters(Some(u64::MAX), 10).expect("letters"), []);
}

fn neither_a_missing_field_nor_json_null_passes_not_equal(db: &ReadModelDb) {
    let writes = batch(&[
        ("c", "missing", Some(r#"{}"#)),
        ("c", "null", Some(r#"{"v":null}"#)),
        ("c", "one", Some(r#"{"v":1}"#)),
        ("c", "two", Some(r#"{"v":2}"#)),
        ("c", "text", Some(r#"{"v":"x"}"#)),
    ]);
    db.commit(&writes, Checkpoint { position: 1, events: 1 }).expect("commit");
    let query = Query {
        filters: vec![Filter { path: "v".into(), op: Op::Ne, value: FilterValue::Integer(1) }],
        ..Query::default()
    };
    let keys = db.query("c", &query).expect("query").into_iter().map(|i| i.key).collect::<Vec<_>>();
    assert_eq!(keys, ["text", "two"]);
}

fn a_declared_index_is_created_once_and_listed(db: &ReadModelDb) {
    db.create_index("users", "address.city").expect("create");
    db.create_index("users", "address.city").expect("create again");
    let indexes = db.indexes().expect("indexes");
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    assert!(indexes[0].contains("city") && indexes[0].contains("'users'"), "{}", indexes[0]);
    db.create_index("users", "email").expect("create");
    assert_eq!(db.indexes().expect("indexes").len(), 2);
}

fn a_cursor_of_the_other_backend_is_refused(db: &ReadModelDb) {
    let foreign = match db.backend_name() {
        "sqlite" => SortValue::Json("1".into()),
        _ => SortValue::Integer(1),
    };
    let query = Query {
        order: Some(Order { path: "v".into(), descending: false }),
        page: Page::After { value: foreign, key: "k".into() },
        ..Query::default()
    };
    match db.query("c", &query) {
        Err(QueryError::Invalid(message)) => assert_eq!(message, "this cursor was not made by this read model"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// PostgreSQL only.

#[test]
fn a_commit_under_a_stale_epoch_is_fenced_and_changes_nothing() {
    let db = postgres();
    let id = db.readmodel_id().expect("a row");
    db.commit(&batch(&[("c", "a", Some("1"))]), Checkpoint { position: 1, events: 1 }).expect("commit");
    // Another host takes the lease over.
    db.database().execute(&format!("UPDATE projector.readmodels SET epoch = epoch + 1 WHERE id = {id}"));
    let late = batch(&[("c", "a", None), ("c", "b", Some("2"))]);
    let refused = db.commit(&late, Checkpoint { position: 2, events: 2 }).expect_err("fenced");
    assert!(refused.downcast_ref::<Fenced>().is_some(), "{refused:#}");
    let letter = DeadLetter { position: 2, stream: "s".into(), revision: 0, event_type: "T".into(), error: "e".into() };
    let refused = db.commit_dead_letter(&letter, Checkpoint { position: 2, events: 2 }).expect_err("fenced");
    assert!(refused.downcast_ref::<Fenced>().is_some(), "{refused:#}");
    assert_eq!(db.document("c", "a").expect("lookup").as_deref(), Some("1"), "documents unchanged");
    assert_eq!(db.document("c", "b").expect("lookup"), None);
    assert_eq!(
        db.checkpoint().expect("checkpoint"),
        Some(Checkpoint { position: 1, events: 1 }),
        "checkpoint unchanged"
    );
    assert_eq!(db.dead_letter_count().expect("count"), 0);

    db.set_fence(Some(1));
    db.commit(&late, Checkpoint { position: 2, events: 2 }).expect("the new epoch commits");
    assert_eq!(db.document("c", "b").expect("lookup").as_deref(), Some("2"));
    assert_eq!(db.checkpoint().expect("checkpoint"), Some(Checkpoint { position: 2, events: 2 }));
    db.set_fence(None);
    let refused = db.commit(&Writes::new(), Checkpoint { position: 3, events: 3 }).expect_err("no lease");
    assert!(refused.downcast_ref::<Fenced>().is_some(), "{refused:#}");
}

#[test]
fn a_second_runner_under_the_same_lease_cannot_apply_a_batch_again() {
    let db = postgres();
    let first = batch(&[("c", "n", Some("1"))]);
    db.commit_after(None, &first, None, Checkpoint { position: 10, events: 1 }).expect("the first batch");
    // A second runner that read the checkpoint before the first batch landed
    // commits the same events: refused, nothing changes.
    let again = batch(&[("c", "n", Some("2"))]);
    let refused = db.commit_after(None, &again, None, Checkpoint { position: 10, events: 1 }).expect_err("stale start");
    assert!(refused.downcast_ref::<Fenced>().is_some(), "{refused:#}");
    let letter =
        DeadLetter { position: 10, stream: "s".into(), revision: 0, event_type: "T".into(), error: "e".into() };
    let refused = db
        .commit_after(Some(5), &Writes::new(), Some(&letter), Checkpoint { position: 10, events: 1 })
        .expect_err("stale start");
    assert!(refused.downcast_ref::<Fenced>().is_some(), "{refused:#}");
    assert_eq!(db.document("c", "n").expect("lookup").as_deref(), Some("1"));
    assert_eq!(db.dead_letter_count().expect("count"), 0);
    // The runner that is where the read model is goes on.
    db.commit_after(Some(10), &again, None, Checkpoint { position: 20, events: 2 })
        .expect("from the stored checkpoint");
    assert_eq!(db.checkpoint().expect("checkpoint"), Some(Checkpoint { position: 20, events: 2 }));
}

#[test]
fn a_removed_read_model_leaves_no_table_row_or_dead_letter() {
    let db = postgres();
    let database = db.database();
    let id = db.readmodel_id().expect("a row");
    let letter = DeadLetter { position: 1, stream: "s".into(), revision: 0, event_type: "T".into(), error: "e".into() };
    db.commit_dead_letter(&letter, Checkpoint { position: 1, events: 1 }).expect("dead letter");
    db.create_index("c", "v").expect("index");
    ReadModelDb::remove_postgres(&database.pg, "orders", "0001-x").expect("remove");
    let count = |sql: &str| database.query_text(&format!("SELECT count(*)::text FROM {sql}"));
    assert_eq!(count(&format!("pg_tables WHERE schemaname = 'projector' AND tablename = 'documents_{id}'")), ["0"]);
    assert_eq!(count(&format!("pg_indexes WHERE schemaname = 'projector' AND indexname LIKE 'd{id}\\_%'")), ["0"]);
    assert_eq!(count("projector.readmodels"), ["0"]);
    assert_eq!(count("projector.dead_letters"), ["0"]);
    ReadModelDb::remove_postgres(&database.pg, "orders", "0001-x").expect("removing it again does nothing");
    let again = ReadModelDb::open_postgres(&database.pg, "orders", "0001-x").expect("open anew");
    assert_ne!(again.readmodel_id(), Some(id));
    assert_eq!(again.checkpoint().expect("checkpoint"), None);
}

#[test]
fn several_hosts_open_the_same_read_model_at_once() {
    let db = postgres();
    let pg = &db.database().pg;
    let ids = std::thread::scope(|scope| {
        let opening =
            (0..8).map(|_| scope.spawn(|| ReadModelDb::open_postgres(pg, "p", "r").map(|db| db.readmodel_id())));
        opening.collect::<Vec<_>>().into_iter().map(|t| t.join().expect("thread").expect("open")).collect::<Vec<_>>()
    });
    assert!(ids.iter().all(|id| id.is_some() && *id == ids[0]), "{ids:?}");
}

#[test]
fn a_filtered_query_uses_the_declared_index() {
    let db = postgres();
    let database = db.database();
    let id = db.readmodel_id().expect("a row");
    db.create_index("orders", "customer.id").expect("index");
    database.execute(&format!(
        "INSERT INTO projector.documents_{id} SELECT 'orders', i::text, jsonb_build_object('customer', jsonb_build_object('id', i))
         FROM generate_series(1, 20000) AS i;
         ANALYZE projector.documents_{id}"
    ));
    let query = Query {
        filters: vec![Filter { path: "customer.id".into(), op: Op::Eq, value: FilterValue::Integer(42) }],
        ..Query::default()
    };
    assert_eq!(db.query("orders", &query).expect("query").iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["42"]);
    // The same SQL as the query's, its parameter written in.
    let mut params = super::postgres_sql::Params::default();
    let condition = super::postgres_sql::where_clause("orders", &query.filters, &mut params).expect("sql");
    // In key order with a limit, as a listing asks: PostgreSQL must not walk
    // the primary key and filter every document instead.
    let plan = database
        .query_text(&format!(
            "EXPLAIN SELECT key FROM projector.documents_{id} {} ORDER BY key LIMIT 100",
            condition.replace("$1::text", "'42'")
        ))
        .join("\n");
    assert!(plan.contains(&format!("d{id}_")), "{plan}");
}

#[test]
fn a_query_past_its_time_limit_is_too_slow() {
    let db = postgres();
    let id = db.readmodel_id().expect("a row");
    db.database().execute(&format!(
        "INSERT INTO projector.documents_{id} SELECT 'c', i::text, jsonb_build_object('n', i)
         FROM generate_series(1, 200000) AS i"
    ));
    let limit = std::time::Duration::from_millis(1);
    let query = Query {
        filters: vec![Filter { path: "n".into(), op: Op::Gt, value: FilterValue::Integer(5) }],
        order: Some(Order { path: "n".into(), descending: true }),
        time_limit: Some(limit),
        ..Query::default()
    };
    assert!(matches!(db.count("c", &query), Err(QueryError::TooSlow(l)) if l == limit));
    assert!(matches!(db.query("c", &query), Err(QueryError::TooSlow(l)) if l == limit));
    let unlimited = Query { time_limit: None, ..query };
    assert_eq!(db.count("c", &unlimited).expect("count"), 199_995, "the same query answers without a limit");
}

#[test]
fn a_nul_character_is_never_stored_nor_found() {
    let db = postgres();
    let checkpoint = Checkpoint { position: 1, events: 1 };
    db.commit(&batch(&[("c", "a", Some("1"))]), checkpoint).expect("commit");
    for writes in
        [batch(&[("c", "b\0", Some("1"))]), batch(&[("c\0", "b", None)]), batch(&[("c", "b", Some(r#""\u0000""#))])]
    {
        db.commit(&writes, Checkpoint { position: 2, events: 2 }).expect_err("PostgreSQL's text holds no NUL");
    }
    assert_eq!(db.checkpoint().expect("checkpoint"), Some(checkpoint), "nothing of those batches kept");
    assert_eq!(db.document("c", "b\0").expect("lookup"), None);
    assert_eq!(db.count("c\0", &Query::default()).expect("count"), 0);
    let filter = Filter { path: "v".into(), op: Op::Eq, value: FilterValue::Text("x\0".into()) };
    assert!(matches!(db.query("c", &Query { filters: vec![filter], ..Query::default() }), Err(QueryError::Invalid(_))));
    let letter =
        DeadLetter { position: 3, stream: "s".into(), revision: 0, event_type: "T".into(), error: "a\0b".into() };
    db.commit_dead_letter(&letter, Checkpoint { position: 3, events: 3 }).expect("dead letter");
    assert_eq!(db.dead_letters(None, 10).expect("letters")[0].error, "a\u{fffd}b");
}
