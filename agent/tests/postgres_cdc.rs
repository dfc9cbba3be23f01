//! The PostgreSQL incremental sync (logical replication) against a real
//! PostgreSQL with `wal_level = logical`, into a collecting sink.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferry_agent::postgres::cdc::{self, Change, ChangeSink, IncrementalReport, IncrementalRequest, Mode};
use ferry_agent::postgres::{DocumentSink, PostgresConfig};
use ferry_sdk::{ConfigValues, SourceError, SyncStopped};
use ferry_tests::postgres::PgCluster;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const DB: &str = "ferry";
const CONNECTOR: &str = "Conn-1";

#[derive(Default)]
struct Shared {
    /// (op, id, source or fields, version)
    changes: Vec<(&'static str, String, String, u64)>,
    checkpoint: Vec<u8>,
    /// When set, acknowledgements are withheld.
    hold_acks: bool,
    acked: Option<Vec<u8>>,
    metadata: BTreeMap<String, Value>,
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Shared>>);

impl Collect {
    fn push(&self, op: &'static str, id: String, body: Vec<u8>, version: u64) {
        let mut s = self.0.lock().unwrap();
        s.changes.push((op, id, String::from_utf8(body).unwrap(), version));
    }
    fn changes(&self) -> Vec<(&'static str, String, String, u64)> {
        self.0.lock().unwrap().changes.clone()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().changes.len()
    }
    fn acked(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap().acked.clone()
    }
}

#[async_trait]
impl DocumentSink for Collect {
    async fn send(&mut self, id: String, source: Vec<u8>) -> Result<(), SyncStopped> {
        self.push("index", id, source, 0);
        Ok(())
    }
    fn checkpoint(&mut self, position: Vec<u8>) {
        self.0.lock().unwrap().checkpoint = position;
    }
    fn set_metadata(&mut self, key: &str, value: Value) {
        self.0.lock().unwrap().metadata.insert(key.to_owned(), value);
    }
}

#[async_trait]
impl ChangeSink for Collect {
    async fn apply(&mut self, change: Change, version: u64) -> Result<(), SyncStopped> {
        match change {
            Change::Index { id, source } => self.push("index", id, source, version),
            Change::Update { id, source } => self.push("update", id, source, version),
            Change::Delete { id } => self.push("delete", id, Vec::new(), version),
            Change::DeleteMatching { fields } => self.push("delete_matching", String::new(), fields, version),
        }
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), SyncStopped> {
        Ok(())
    }
    async fn barrier(&mut self) -> Result<(), SyncStopped> {
        loop {
            {
                let mut s = self.0.lock().unwrap();
                if !s.hold_acks {
                    s.acked = Some(s.checkpoint.clone());
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    fn acknowledged(&mut self) -> Option<Vec<u8>> {
        let mut s = self.0.lock().unwrap();
        if !s.hold_acks && !s.checkpoint.is_empty() {
            s.acked = Some(s.checkpoint.clone());
        }
        s.acked.clone()
    }
    async fn progress(&mut self, metadata: serde_json::Map<String, Value>) -> Result<(), SyncStopped> {
        let mut s = self.0.lock().unwrap();
        for (k, v) in metadata {
            s.metadata.insert(k, v);
        }
        Ok(())
    }
}

fn values(pg: &PgCluster, tables: &str) -> ConfigValues {
    let v = json!({
        "host": pg.host(), "port": pg.port(), "username": pg.superuser(), "password": pg.password(),
        "database": DB, "schema": "public", "tables": tables,
    });
    v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn config(pg: &PgCluster, tables: &str) -> PostgresConfig {
    PostgresConfig::from_values(&values(pg, tables)).unwrap()
}

async fn logical_cluster(sql: &str) -> PgCluster {
    let pg = PgCluster::start_logical().unwrap();
    pg.create_database(DB).await.unwrap();
    pg.execute(DB, sql).await.unwrap();
    pg
}

/// Run a job on its own task.
fn spawn(
    cfg: PostgresConfig,
    cursor: Option<Vec<u8>>,
    mode: Mode,
    sink: Collect,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<Result<IncrementalReport, SourceError>> {
    tokio::spawn(async move {
        let mut sink = sink;
        let req = IncrementalRequest {
            cfg: &cfg,
            connector_id: CONNECTOR,
            cursor: cursor.as_deref(),
            mode,
            cancel: &cancel,
        };
        cdc::incremental_sync(req, &mut sink).await
    })
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn doc(src: &str) -> Value {
    serde_json::from_str(src).unwrap_or_else(|e| panic!("not JSON ({e}): {src}"))
}

const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, name text, body text, price numeric(10,2), \
                     seen timestamptz, tags text[]); \
                     ALTER TABLE items ALTER body SET STORAGE EXTERNAL; \
                     CREATE TABLE nokey (a int); \
                     INSERT INTO items VALUES (1, 'one', repeat('x', 5000), 1.50, '2024-01-02 03:04:05+00', '{a,b}'), \
                     (2, 'two', 'short', NULL, NULL, NULL);";

#[tokio::test]
async fn snapshot_then_every_change_kind_arrives() {
    let pg = logical_cluster(ITEMS).await;
    let cfg = config(&pg, "*");
    let sink = Collect::default();
    let cancel = CancellationToken::new();
    let job = spawn(cfg.clone(), None, Mode::Continuous, sink.clone(), cancel.clone());
    wait_for("the snapshot", || sink.count() >= 2).await;
    let snap = sink.changes();
    let one = doc(&snap.iter().find(|c| c.1 == "ferry_public_items_1").unwrap().2);
    assert_eq!(one["public_items_name"], "one");
    assert_eq!(one["public_items_body"].as_str().unwrap().len(), 5000);
    assert_eq!(one["public_items_tags"], json!(["a", "b"]));

    pg.execute(
        DB,
        "INSERT INTO items VALUES (3, 'three', 'b3', 3.25, '2025-06-07 08:09:10.5+02', '{c}'); \
         UPDATE items SET name = 'uno' WHERE id = 1; \
         DELETE FROM items WHERE id = 2; \
         UPDATE items SET id = 30 WHERE id = 3; \
         INSERT INTO nokey VALUES (1);",
    )
    .await
    .unwrap();
    pg.execute(DB, "TRUNCATE items").await.unwrap();
    wait_for("the changes", || sink.changes().iter().any(|c| c.0 == "delete_matching")).await;
    let changes: Vec<_> = sink.changes().into_iter().skip(snap.len()).collect();
    let ops: Vec<(&str, &str)> = changes.iter().map(|c| (c.0, c.1.as_str())).collect();
    assert_eq!(
        ops,
        vec![
            ("index", "ferry_public_items_3"),
            ("update", "ferry_public_items_1"),
            ("delete", "ferry_public_items_2"),
            ("delete", "ferry_public_items_3"),
            ("index", "ferry_public_items_30"),
            ("delete_matching", ""),
        ]
    );
    // Rendered like the full sync.
    let three = doc(&changes[0].2);
    assert_eq!(three["id"], "ferry_public_items_3");
    assert_eq!(three["public_items_price"], json!(3.25));
    assert_eq!(three["public_items_seen"], "2025-06-07T06:09:10.5+00:00");
    assert_eq!(three["public_items_tags"], json!(["c"]));
    assert_eq!(three["table"], "items");
    // The unchanged TOASTed body is left out of the partial update, never blanked.
    let partial = doc(&changes[1].2);
    assert_eq!(partial["public_items_name"], "uno");
    assert!(partial.get("public_items_body").is_none(), "{partial}");
    assert_eq!(partial["public_items_price"], json!(1.50));
    assert_eq!(doc(&changes[5].2), json!({"table": "items", "schema": "public", "database": DB}));
    // Versions are WAL positions: increasing.
    let versions: Vec<u64> = changes.iter().map(|c| c.3).collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]) && versions[0] > 0, "{versions:?}");
    let meta = sink.0.lock().unwrap().metadata.clone();
    assert!(meta["skipped_tables"]["tables"].to_string().contains("nokey"), "{meta:?}");
    cancel.cancel();
    assert!(matches!(job.await.unwrap(), Err(SourceError::Stopped(SyncStopped::Canceled))));
}

async fn confirmed_flush(pg: &PgCluster) -> u64 {
    let c = pg.client(DB).await.unwrap();
    let row = c
        .query_one(
            "SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::int8 FROM pg_replication_slots WHERE slot_name = $1",
            &[&cdc::names(CONNECTOR)],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) as u64
}

#[tokio::test]
async fn drain_jobs_complete_and_the_next_continues_from_the_cursor() {
    let pg = logical_cluster(ITEMS).await;
    let cfg = config(&pg, "items");
    let sink = Collect::default();
    let first = spawn(cfg.clone(), None, Mode::Drain, sink.clone(), CancellationToken::new());
    let report = tokio::time::timeout(Duration::from_secs(60), first).await.unwrap().unwrap().unwrap();
    assert_eq!(report.snapshot_rows, 2);
    let cursor = sink.acked().expect("a cursor");
    assert!(String::from_utf8_lossy(&cursor).contains("\"lsn\""));

    pg.execute(DB, "INSERT INTO items (id, name) VALUES (5, 'five'); DELETE FROM items WHERE id = 1;")
        .await
        .unwrap();
    let sink2 = Collect::default();
    let second = spawn(cfg.clone(), Some(cursor), Mode::Drain, sink2.clone(), CancellationToken::new());
    let report = tokio::time::timeout(Duration::from_secs(60), second).await.unwrap().unwrap().unwrap();
    assert_eq!(report.snapshot_rows, 0);
    let ops: Vec<(&str, String)> = sink2.changes().into_iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(
        ops,
        vec![("index", "ferry_public_items_5".to_owned()), ("delete", "ferry_public_items_1".to_owned())]
    );
    // Nothing new: a third drain job completes with nothing.
    let sink3 = Collect::default();
    let third = spawn(cfg.clone(), sink2.acked(), Mode::Drain, sink3.clone(), CancellationToken::new());
    tokio::time::timeout(Duration::from_secs(60), third).await.unwrap().unwrap().unwrap();
    assert_eq!(sink3.count(), 0);

    cdc::release(&cfg, CONNECTOR).await.unwrap();
    let c = pg.client(DB).await.unwrap();
    let slots = c.query("SELECT 1 FROM pg_replication_slots", &[]).await.unwrap();
    let pubs = c.query("SELECT 1 FROM pg_publication", &[]).await.unwrap();
    assert_eq!((slots.len(), pubs.len()), (0, 0));
}

#[tokio::test]
async fn the_slot_is_confirmed_only_after_acknowledgement() {
    let pg = logical_cluster(ITEMS).await;
    let cfg = config(&pg, "items");
    let sink = Collect::default();
    let cancel = CancellationToken::new();
    let job = spawn(cfg.clone(), None, Mode::Continuous, sink.clone(), cancel.clone());
    wait_for("the snapshot", || sink.count() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sink.0.lock().unwrap().hold_acks = true;
    let before = confirmed_flush(&pg).await;
    pg.execute(DB, "UPDATE items SET name = 'held' WHERE id = 2").await.unwrap();
    wait_for("the held change", || sink.changes().iter().any(|c| c.2.contains("held"))).await;
    // Give the status task several rounds: it must not confirm past the held change.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = confirmed_flush(&pg).await;
    let c = pg.client(DB).await.unwrap();
    let now: i64 =
        c.query_one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8", &[]).await.unwrap().get(0);
    assert!(held <= now as u64);
    let commit_end = {
        let s = sink.0.lock().unwrap();
        let cur = cdc::Cursor::parse(&s.checkpoint).unwrap();
        ferry_agent::postgres::cdc::wire::parse_lsn(cur.lsn.as_deref().unwrap()).unwrap()
    };
    assert!(
        held < commit_end,
        "confirmed {held:X} reached the unacknowledged commit {commit_end:X} (before {before:X})"
    );
    sink.0.lock().unwrap().hold_acks = false;
    let until = Instant::now() + Duration::from_secs(20);
    while confirmed_flush(&pg).await < commit_end {
        assert!(Instant::now() < until, "the slot was not confirmed after the acknowledgement");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    let _ = job.await;
}

#[tokio::test]
async fn many_updates_of_one_row_end_on_the_last_and_big_transactions_stream() {
    let pg =
        logical_cluster("CREATE TABLE c (id int PRIMARY KEY, n int); INSERT INTO c VALUES (1, 0);").await;
    let cfg = config(&pg, "c");
    let sink = Collect::default();
    let cancel = CancellationToken::new();
    let job = spawn(cfg.clone(), None, Mode::Continuous, sink.clone(), cancel.clone());
    wait_for("the snapshot", || sink.count() >= 1).await;
    let mut sql = String::new();
    for i in 1..=300 {
        sql.push_str(&format!("UPDATE c SET n = {i} WHERE id = 1;"));
    }
    pg.execute(DB, &sql).await.unwrap();
    pg.execute(DB, "INSERT INTO c SELECT g, g FROM generate_series(2, 50001) g").await.unwrap();
    wait_for("every change", || sink.count() >= 1 + 300 + 50_000).await;
    let changes = sink.changes();
    let last = changes.iter().rev().find(|c| c.1 == "ferry_public_c_1").unwrap();
    assert_eq!(doc(&last.2)["public_c_n"], 300);
    let versions: Vec<u64> =
        changes.iter().filter(|c| c.1 == "ferry_public_c_1").skip(1).map(|c| c.3).collect();
    assert_eq!(versions.len(), 300);
    assert!(versions.windows(2).all(|w| w[0] < w[1]));
    cancel.cancel();
    let _ = job.await;
}

#[tokio::test]
async fn a_server_without_logical_replication_gets_the_fix() {
    let pg = PgCluster::start().unwrap();
    pg.create_database(DB).await.unwrap();
    pg.execute(DB, "CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let cfg = config(&pg, "*");
    let err = spawn(cfg, None, Mode::Drain, Collect::default(), CancellationToken::new())
        .await
        .unwrap()
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::Configuration(_)), "{msg}");
    assert!(msg.contains("wal_level = logical") && msg.contains("restart"), "{msg}");

    // A role without REPLICATION is told how to grant it.
    let pg = logical_cluster(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE ROLE reader LOGIN PASSWORD 'pw'; \
                              GRANT SELECT ON t TO reader;",
    )
    .await;
    let mut cfg = config(&pg, "*");
    cfg.username = "reader".into();
    cfg.password = "pw".into();
    let err = spawn(cfg, None, Mode::Drain, Collect::default(), CancellationToken::new())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("WITH REPLICATION"), "{err}");
}

/// The source as the agent runtime sees it: it announces incremental jobs,
/// and deleting the connector (`release_connector`) drops its slot and
/// publication, also while a stream still holds the slot.
#[tokio::test]
async fn the_source_announces_incremental_and_release_drops_slot_and_publication() {
    use ferry_sdk::{JobKind, Source};
    let source = ferry_agent::postgres::PostgresSource::new();
    assert!(source.capabilities().job_kinds.contains(&JobKind::Incremental));
    assert!(source.capabilities().job_kinds.contains(&JobKind::Full));

    let pg = logical_cluster(ITEMS).await;
    let cfg = config(&pg, "items");
    let sink = Collect::default();
    let cancel = CancellationToken::new();
    let job = spawn(cfg.clone(), None, Mode::Continuous, sink.clone(), cancel.clone());
    wait_for("the snapshot", || sink.count() >= 2).await;
    let c = pg.client(DB).await.unwrap();
    let count = |sql: &'static str| {
        let c = &c;
        async move { c.query(sql, &[]).await.unwrap().len() }
    };
    assert_eq!(count("SELECT 1 FROM pg_replication_slots WHERE active").await, 1);
    assert_eq!(count("SELECT 1 FROM pg_publication").await, 1);
    source.release_connector(CONNECTOR, &values(&pg, "items")).await.unwrap();
    assert_eq!(count("SELECT 1 FROM pg_replication_slots").await, 0);
    assert_eq!(count("SELECT 1 FROM pg_publication").await, 0);
    // The stream lost its session: the job ends with an error (or canceled), never hangs.
    let ended = tokio::time::timeout(Duration::from_secs(30), job).await.expect("the job ended");
    assert!(ended.unwrap().is_err());
    // Releasing again is fine (nothing left).
    source.release_connector(CONNECTOR, &values(&pg, "items")).await.unwrap();
}
