//! The PostgreSQL source against a real, throwaway PostgreSQL cluster.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ferry_agent::postgres::{full_sync, DocumentSink, PostgresConfig, PostgresSource, SyncReport};
use ferry_sdk::{ConfigValues, Source, SourceError, SyncStopped};
use ferry_tests::postgres::PgCluster;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const DB: &str = "ferry";

#[derive(Default)]
struct Collect {
    docs: Vec<(String, String)>,
    checkpoints: Vec<Vec<u8>>,
    metadata: BTreeMap<String, Value>,
}

#[async_trait]
impl DocumentSink for Collect {
    async fn send(&mut self, id: String, source: Vec<u8>) -> Result<(), SyncStopped> {
        self.docs.push((id, String::from_utf8(source).expect("utf-8 document")));
        Ok(())
    }
    fn checkpoint(&mut self, position: Vec<u8>) {
        self.checkpoints.push(position);
    }
    fn set_metadata(&mut self, key: &str, value: Value) {
        self.metadata.insert(key.to_owned(), value);
    }
}

impl Collect {
    fn ids(&self) -> Vec<&str> {
        self.docs.iter().map(|(id, _)| id.as_str()).collect()
    }
    fn doc(&self, id: &str) -> Value {
        let (_, src) = self.docs.iter().find(|(i, _)| i == id).unwrap_or_else(|| panic!("no document {id}"));
        serde_json::from_str(src).unwrap()
    }
}

fn values(pg: &PgCluster, tables: &str) -> ConfigValues {
    let v = json!({
        "host": pg.host(), "port": pg.port(), "username": pg.superuser(), "password": pg.password(),
        "database": DB, "schema": "public", "tables": tables,
    });
    v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

async fn cluster(sql: &str) -> PgCluster {
    let pg = PgCluster::start().unwrap();
    pg.create_database(DB).await.unwrap();
    pg.execute(DB, sql).await.unwrap();
    pg
}

async fn sync(pg: &PgCluster, tables: &str, resume: Option<&[u8]>) -> (Collect, SyncReport) {
    let cfg = PostgresConfig::from_values(&values(pg, tables)).unwrap();
    let mut sink = Collect::default();
    let report = full_sync(&cfg, resume, &CancellationToken::new(), &mut sink).await.unwrap();
    (sink, report)
}

/// The raw JSON token of `key` in a document's text (numbers only).
fn raw_number<'a>(src: &'a str, key: &str) -> &'a str {
    let at = src.find(&format!("\"{key}\"")).unwrap_or_else(|| panic!("no {key} in {src}"));
    let rest = src[at + key.len() + 2..].trim_start().strip_prefix(':').unwrap().trim_start();
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim_end()
}

#[tokio::test]
async fn types_are_rendered_faithfully() {
    let pg = cluster(
        r#"
        CREATE TYPE mood AS ENUM ('sad', 'happy');
        CREATE TYPE pair AS (a int, b text);
        CREATE TABLE types (
            id int PRIMARY KEY, s smallint, i int, b bigint, n numeric(30,10), nn numeric,
            r real, d double precision, dd double precision, t text, vc varchar(10), ch char(3),
            bo boolean, da date, ti time, ts timestamp, tz timestamptz, iv interval, jb jsonb,
            js json, ia int[], ta text[], by bytea, u uuid, ip inet, ci cidr, mac macaddr,
            mo money, e mood, c pair, "Mixed Case" text);
        INSERT INTO types VALUES (1, 32767, -2147483648, 9223372036854775807,
            12345678901234567890.1234567890, 'NaN', 'Infinity', '-Infinity', 0.1,
            E'he said "hi"\nline2 \\ ünïcødé 🚀', 'abc', 'ab', true, '2024-02-29',
            '13:45:06.5', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02',
            '1 day 02:03:04', '{"a": {"b": [1, 2, {"c": null}]}, "d": 1.50}',
            E'{"x":\n 1}', '{1,2,3}', '{"a","b c","\"q\""}', '\x00ff10',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '10.0.0.0/8',
            '08:00:2b:01:02:03', 12.34, 'happy', ROW(1, 'x'), 'M');
        INSERT INTO types (id) VALUES (2);
        "#,
    )
    .await;
    let (sink, report) = sync(&pg, "types", None).await;
    assert_eq!(report.rows_read, 2);
    assert_eq!(sink.ids(), ["ferry_public_types_1", "ferry_public_types_2"]);
    for (_, src) in &sink.docs {
        assert!(!src.contains('\n') && !src.contains('\r'), "document has a line break: {src}");
    }
    let raw = &sink.docs[0].1;
    assert_eq!(raw_number(raw, "public_types_n"), "12345678901234567890.1234567890");
    assert_eq!(raw_number(raw, "public_types_b"), "9223372036854775807");
    assert_eq!(raw_number(raw, "public_types_dd"), "0.1");

    let d = sink.doc("ferry_public_types_1");
    let f = |c: &str| d[format!("public_types_{c}")].clone();
    assert_eq!(f("id"), json!(1));
    assert_eq!(f("s"), json!(32767));
    assert_eq!(f("i"), json!(-2147483648i64));
    // What an index cannot hold is null, the original kept in _ferry_original.
    assert_eq!(f("nn"), Value::Null);
    assert_eq!(f("r"), Value::Null);
    assert_eq!(f("d"), Value::Null);
    assert_eq!(
        d["_ferry_original"],
        json!({"public_types_nn": "NaN", "public_types_r": "Infinity", "public_types_d": "-Infinity",
               "public_types_ip": "192.168.0.1/24"})
    );
    assert_eq!(report.unrepresentable_values, 4);
    assert_eq!(sink.metadata["unrepresentable_values"], json!(4));
    assert_eq!(f("t"), json!("he said \"hi\"\nline2 \\ ünïcødé 🚀"));
    assert_eq!(f("vc"), json!("abc"));
    assert_eq!(f("ch"), json!("ab "));
    assert_eq!(f("bo"), json!(true));
    assert_eq!(f("da"), json!("2024-02-29"));
    assert_eq!(f("ti"), json!("13:45:06.5"));
    assert_eq!(f("ts"), json!("2024-01-02T03:04:05.123456+00:00"));
    assert_eq!(f("tz"), json!("2024-01-02T01:04:05+00:00"));
    assert_eq!(f("iv"), json!("1 day 02:03:04"));
    // An array mixing objects and values would break any mapping: values wrapped.
    assert_eq!(f("jb"), json!({"a": {"b": [{"value": 1}, {"value": 2}, {"c": null}]}, "d": 1.50}));
    assert_eq!(f("js"), json!({"x": 1}));
    assert_eq!(f("ia"), json!([1, 2, 3]));
    assert_eq!(f("ta"), json!(["a", "b c", "\"q\""]));
    assert_eq!(f("by"), json!("AP8Q"));
    assert_eq!(f("u"), json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_eq!(f("ip"), Value::Null); // an address with a mask is not an `ip`
    assert_eq!(f("ci"), json!("10.0.0.0/8"));
    assert_eq!(f("mac"), json!("08:00:2b:01:02:03"));
    assert_eq!(f("mo"), json!("$12.34"));
    assert_eq!(f("e"), json!("happy"));
    assert_eq!(f("c"), json!({"a": 1, "b": "x"}));
    assert_eq!(f("mixed case"), json!("M"));
    // Extra fields.
    assert_eq!(d["id"], json!("ferry_public_types_1"));
    assert_eq!(d["table"], json!("types"));
    assert_eq!(d["schema"], json!("public"));
    assert_eq!(d["database"], json!("ferry"));
    let ts = d["_timestamp"].as_str().unwrap();
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(ts.ends_with('Z'), "{ts}");

    // All NULLs.
    let d2 = sink.doc("ferry_public_types_2");
    assert_eq!(d2.as_object().unwrap().len(), 31 + 5);
    for c in ["n", "t", "ts", "jb", "ia", "by", "c", "e", "mixed case"] {
        assert_eq!(d2[format!("public_types_{c}")], Value::Null, "{c}");
    }
}

#[tokio::test]
async fn ids_equal_elastic_9_formula() {
    // Elastic 9.x: f"{database}_{schema}_" + "_".join(sorted(tables)) + "_" +
    // "_".join(str(v) for pk in key_columns if (v := row.get(pk)) is not None),
    // key columns in key order, values as Python's str() of asyncpg's values.
    let pg = cluster(
        r#"
        CREATE TABLE orders (region text, n int, "Note" text, PRIMARY KEY (n, region));
        INSERT INTO orders VALUES ('eu', 1, 'a'), ('eu', 0, 'b'), ('', 5, 'c');
        CREATE TABLE pairs (a int, b int, PRIMARY KEY (a, b));
        INSERT INTO pairs VALUES (0, 1), (1, 0);
        CREATE TABLE single (id int PRIMARY KEY);
        INSERT INTO single VALUES (0), (7);
        CREATE TABLE flags (f boolean PRIMARY KEY);
        INSERT INTO flags VALUES (true), (false);
        CREATE TABLE long_keys (k text PRIMARY KEY);
        INSERT INTO long_keys VALUES (repeat('x', 600));
        CREATE TABLE prices (p numeric(10,2) PRIMARY KEY);
        INSERT INTO prices VALUES (1.5), (0), (-2.25);
        CREATE TABLE tiny (p numeric PRIMARY KEY);
        INSERT INTO tiny VALUES (0.0000001);
        CREATE TABLE floats (f float8 PRIMARY KEY);
        INSERT INTO floats VALUES (2), (0.1);
        CREATE TABLE times (t timestamptz PRIMARY KEY);
        INSERT INTO times VALUES ('2024-01-02 03:04:05+00'), ('2024-01-02 03:04:05.5+02');
        CREATE TABLE naive (t timestamp PRIMARY KEY, d date);
        INSERT INTO naive VALUES ('2024-01-02 03:04:05.123', '2024-01-02');
        CREATE TABLE days (d date PRIMARY KEY);
        INSERT INTO days VALUES ('2024-02-29');
        CREATE TABLE uuids (u uuid PRIMARY KEY);
        INSERT INTO uuids VALUES ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11');
        CREATE TABLE codes (c char(4) PRIMARY KEY);
        INSERT INTO codes VALUES ('ab');
        "#,
    )
    .await;
    let (sink, report) = sync(&pg, "*", None).await;
    let long = format!("ferry_public_long_keys_{}", "x".repeat(600));
    let long_md5 = {
        use md5::Digest;
        hex::encode(md5::Md5::digest(long.as_bytes()))
    };
    // Tables in name order, rows in key order; id parts in key order (n,
    // region), although the columns are (region, n).
    assert_eq!(
        sink.ids(),
        [
            "ferry_public_codes_ab  ",
            "ferry_public_days_2024-02-29",
            "ferry_public_flags_False",
            "ferry_public_flags_True",
            "ferry_public_floats_0.1",
            "ferry_public_floats_2.0",
            long_md5.as_str(),
            "ferry_public_naive_2024-01-02 03:04:05.123000",
            "ferry_public_orders_0_eu",
            "ferry_public_orders_1_eu",
            "ferry_public_orders_5_",
            "ferry_public_pairs_0_1",
            "ferry_public_pairs_1_0",
            "ferry_public_prices_-2.25",
            "ferry_public_prices_0.00",
            "ferry_public_prices_1.50",
            "ferry_public_single_0",
            "ferry_public_single_7",
            "ferry_public_times_2024-01-02 01:04:05.500000+00:00",
            "ferry_public_times_2024-01-02 03:04:05+00:00",
            "ferry_public_tiny_1E-7",
            "ferry_public_uuids_a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ]
    );
    let d = sink.doc("ferry_public_orders_1_eu");
    assert_eq!(d["public_orders_region"], json!("eu"));
    assert_eq!(d["public_orders_n"], json!(1));
    assert_eq!(d["public_orders_note"], json!("a"));
    assert_eq!(d["id"], json!("ferry_public_orders_1_eu"));
    assert_eq!(sink.doc(&long_md5)["id"], json!(long_md5));
    assert_eq!(report.rows_per_table["orders"], 3);
    assert_eq!(sink.metadata["rows_read"], json!(22));
    assert!(!sink.metadata.contains_key("id_collisions"), "{:?}", sink.metadata);
}

#[tokio::test]
async fn id_collisions_are_reported_on_the_job() {
    // ("a_b", "c") and ("a", "b_c") both become `..._a_b_c` in Elastic's format.
    let pg = cluster(
        r#"
        CREATE TABLE tags (x text, y text, PRIMARY KEY (x, y));
        INSERT INTO tags VALUES ('a_b', 'c'), ('a', 'b_c'), ('p', 'q');
        "#,
    )
    .await;
    let (sink, _) = sync(&pg, "*", None).await;
    assert_eq!(sink.ids(), ["ferry_public_tags_a_b_c", "ferry_public_tags_a_b_c", "ferry_public_tags_p_q"]);
    let report = &sink.metadata["id_collisions"];
    assert_eq!(report["count"], json!(1), "{report}");
    assert_eq!(report["examples"][0]["id"], json!("ferry_public_tags_a_b_c"));
    assert_eq!(report["examples"][0]["keys"], json!([["a", "b_c"], ["a_b", "c"]]));
}

#[tokio::test]
async fn weird_table_names_are_names_not_sql() {
    let pg = cluster(
        r#"
        CREATE TABLE "we""ird; DROP" ("Id" int PRIMARY KEY, "va""l" text);
        INSERT INTO "we""ird; DROP" VALUES (1, 'v');
        CREATE TABLE other (id int PRIMARY KEY);
        "#,
    )
    .await;
    let (sink, _) = sync(&pg, "we\"ird; DROP", None).await;
    assert_eq!(sink.ids(), ["ferry_public_we\"ird; DROP_1"]);
    let d = sink.doc("ferry_public_we\"ird; DROP_1");
    assert_eq!(d["public_we\"ird; drop_va\"l"], json!("v"));
    assert_eq!(d["table"], json!("we\"ird; DROP"));
    // Still there.
    pg.execute(DB, "SELECT * FROM other").await.unwrap();
}

#[tokio::test]
async fn tables_without_primary_key_are_skipped_and_reported() {
    let pg = cluster(
        r#"
        CREATE TABLE nopk (a int); INSERT INTO nopk VALUES (1), (2);
        CREATE TABLE withpk (id int PRIMARY KEY); INSERT INTO withpk VALUES (1);
        "#,
    )
    .await;
    let (sink, report) = sync(&pg, "*", None).await;
    assert_eq!(sink.ids(), ["ferry_public_withpk_1"]);
    assert_eq!(report.skipped_tables, ["nopk"]);
    assert_eq!(sink.metadata["skipped_tables"], json!(["nopk"]));
    assert_eq!(sink.metadata["rows_per_table"], json!({"withpk": 1}));
}

#[tokio::test]
async fn resumes_after_the_checkpoint() {
    let pg = cluster(
        r#"
        CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a SELECT generate_series(1, 5);
        CREATE TABLE b (k text, t timestamptz, PRIMARY KEY (k, t));
        INSERT INTO b SELECT 'k' || (g % 2), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour'
            FROM generate_series(1, 6) g;
        "#,
    )
    .await;
    let (full, _) = sync(&pg, "*", None).await;
    assert_eq!(full.docs.len(), 11);
    assert_eq!(full.checkpoints.len(), 11);
    let cp: Value = serde_json::from_slice(&full.checkpoints[2]).unwrap();
    assert_eq!(cp, json!({"table": "a", "after": ["3"]}));

    // Resume inside table a: rows 4, 5 of a, then all of b.
    let (resumed, _) = sync(&pg, "*", Some(&full.checkpoints[2])).await;
    let expected: Vec<&str> = full.ids()[3..].to_vec();
    assert_eq!(resumed.ids(), expected);

    // Resume inside table b (composite key with a timestamptz): a is skipped.
    let (resumed, report) = sync(&pg, "*", Some(&full.checkpoints[7])).await;
    assert_eq!(resumed.ids(), full.ids()[8..].to_vec());
    assert!(!report.rows_per_table.contains_key("a"));

    // An unreadable checkpoint restarts from scratch.
    let (resumed, _) = sync(&pg, "*", Some(b"garbage")).await;
    assert_eq!(resumed.ids(), full.ids());
}

#[tokio::test]
async fn validate_reports_what_to_fix() {
    let pg = cluster("CREATE TABLE present (id int PRIMARY KEY);").await;
    let source = PostgresSource::new();
    assert_eq!(source.service_type(), "postgresql");
    source.validate(&values(&pg, "present")).await.unwrap();
    source.validate(&values(&pg, "*")).await.unwrap();

    let mut wrong = values(&pg, "*");
    wrong.insert("password".into(), json!("nope"));
    match source.validate(&wrong).await {
        Err(SourceError::Unreachable(m)) => {
            assert!(m.contains("password authentication failed for user \"postgres\""), "{m}");
            assert!(m.contains(&format!("127.0.0.1:{}", pg.port())), "{m}");
            assert!(m.contains("check username and password"), "{m}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }

    match source.validate(&values(&pg, "present, absent_one")).await {
        Err(SourceError::Configuration(m)) => {
            assert!(m.contains("\"absent_one\"") && m.contains("`tables`"), "{m}")
        }
        other => panic!("expected Configuration, got {other:?}"),
    }

    let mut bad_schema = values(&pg, "*");
    bad_schema.insert("schema".into(), json!("nowhere"));
    match source.validate(&bad_schema).await {
        Err(SourceError::Configuration(m)) => assert!(m.contains("nowhere") && m.contains("`schema`"), "{m}"),
        other => panic!("expected Configuration, got {other:?}"),
    }

    let mut closed = values(&pg, "*");
    closed.insert("port".into(), json!(1));
    closed.insert("retry_count".into(), json!(0));
    match source.validate(&closed).await {
        Err(SourceError::Unreachable(m)) => assert!(m.contains("check host and port"), "{m}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn star_reads_every_table_once_including_partitioned_and_wide_ones() {
    let mut wide_cols = String::new();
    for i in 0..60 {
        wide_cols.push_str(&format!(", c{i} int DEFAULT {i}"));
    }
    let pg = cluster(&format!(
        r#"
        CREATE TABLE events (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
        CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
        CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
        INSERT INTO events VALUES (1, 'eu'), (2, 'us');
        CREATE TABLE wide (id int PRIMARY KEY {wide_cols});
        INSERT INTO wide (id) VALUES (1);
        CREATE VIEW v AS SELECT 1 AS x;
        CREATE SCHEMA other; CREATE TABLE other.hidden (id int PRIMARY KEY); INSERT INTO other.hidden VALUES (1);
        "#
    ))
    .await;
    let (sink, report) = sync(&pg, "*", None).await;
    assert_eq!(sink.ids(), ["ferry_public_events_1_eu", "ferry_public_events_2_us", "ferry_public_wide_1"]);
    assert!(report.skipped_tables.is_empty());
    let w = sink.doc("ferry_public_wide_1");
    assert_eq!(w["public_wide_c59"], json!(59));
    assert_eq!(w.as_object().unwrap().len(), 61 + 5);
}

#[tokio::test]
async fn cancellation_stops_the_sync() {
    let pg = cluster("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);").await;
    let cfg = PostgresConfig::from_values(&values(&pg, "*")).unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let mut sink = Collect::default();
    let err = full_sync(&cfg, None, &cancel, &mut sink).await.unwrap_err();
    assert!(matches!(err, SourceError::Stopped(SyncStopped::Canceled)), "{err:?}");
}

#[tokio::test]
async fn tls_verifies_the_server_against_ssl_ca() {
    let pg = cluster("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);").await;
    let pki = ferry_tests::certs::TestPki::new().unwrap();
    let server = pki.server_cert().unwrap();
    pg.enable_tls(&server.cert_pem, &server.key_pem).await.unwrap();
    let source = PostgresSource::new();

    let mut tls = values(&pg, "*");
    tls.insert("ssl_enabled".into(), json!(true));
    tls.insert("ssl_ca".into(), json!(pki.ca_pem()));
    source.validate(&tls).await.unwrap();
    let cfg = PostgresConfig::from_values(&tls).unwrap();
    let mut sink = Collect::default();
    full_sync(&cfg, None, &CancellationToken::new(), &mut sink).await.unwrap();
    assert_eq!(sink.ids(), ["ferry_public_t_1"]);

    // A CA that did not sign the server's certificate is refused.
    let foreign = ferry_tests::certs::TestPki::new().unwrap();
    tls.insert("ssl_ca".into(), json!(foreign.ca_pem()));
    tls.insert("retry_count".into(), json!(0));
    match source.validate(&tls).await {
        Err(SourceError::Unreachable(m)) => assert!(m.contains("ssl_ca"), "{m}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

/// Every type the agent renders itself gives, value for value, the JSON
/// PostgreSQL's own `to_json` gives: edge values of each, NULLs, domains.
#[tokio::test]
async fn agent_rendering_matches_postgresql_to_json() {
    let pg = cluster(
        r#"
        CREATE DOMAIN posint AS bigint CHECK (VALUE > 0);
        CREATE TABLE edge (
            id int PRIMARY KEY, bo boolean, s smallint, i int, b bigint, dom posint,
            n numeric, n2 numeric(12,2), t text, vc varchar(20), ch char(5), nm name,
            u uuid, da date, tz timestamptz, ts timestamp, js json, jb jsonb, by bytea);
        INSERT INTO edge VALUES
          (1, true, -32768, 2147483647, -9223372036854775808, 1, 0, 0, '', '', '', '',
           '00000000-0000-0000-0000-000000000000', '0001-01-01', '0001-01-01 00:00:00+00',
           '0001-01-01 00:00:00', 'null', 'null', ''),
          (2, false, 0, 0, 0, 9223372036854775807, -0.000001, -12.5,
           E'tab\there\u0001\u001f "q" \\ / ü 🚀 \r\n', 'x', 'x', 'nm',
           'FFFFFFFF-1234-5678-9ABC-DEF012345678', '2024-02-29', '2024-02-29 23:59:59.999999+00',
           '1999-12-31 23:59:59.5', '[1, "a\nb", {"k": [true, null]}]', '{"z": 1.50, "a": [1e3, -0]}', '\x00'),
          (3, NULL, 1, -1, 1, 2, 123456789012345678901234567890.000000000000000000001, 99999999.99,
           repeat('long ', 2000), 'ends with space ', 'ab', 'a"b',
           NULL, '4713-01-01 BC', '0044-03-15 12:00:00+00 BC', '294276-12-31 23:59:59.999999',
           '{"deep": {"deeper": [[[]]]}}', '[]', '\xdeadbeef'),
          (4, NULL, NULL, NULL, NULL, NULL, 'NaN', NULL, NULL, NULL, NULL, NULL, NULL,
           'infinity', '-infinity', 'infinity', NULL, NULL, NULL),
          (5, NULL, NULL, NULL, NULL, NULL, 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL,
           '-infinity', 'infinity', '-infinity', NULL, NULL, NULL),
          (6, NULL, NULL, NULL, NULL, NULL, '-Infinity', 1.10, NULL, NULL, NULL, NULL, NULL,
           '10000-01-01', '10000-06-30 01:02:03.04+00', '2000-01-01 00:00:00.000001', NULL, NULL, NULL),
          (7, NULL, NULL, NULL, NULL, NULL, 1e-30, 0.01, NULL, NULL, NULL, NULL, NULL,
           '1970-01-01', '1969-12-31 23:59:59.9+00', '2100-03-01 00:00:00', NULL, NULL, NULL),
          (8, NULL, NULL, NULL, NULL, NULL, 100000000, 1000, NULL, NULL, NULL, NULL, NULL,
           '1600-02-29', '1900-03-01 00:00:00+00', '0001-12-31 23:59:59 BC', NULL, NULL, NULL);
        "#,
    )
    .await;
    let (sink, _) = sync(&pg, "edge", None).await;
    assert_eq!(sink.docs.len(), 8);
    let cols = [
        "bo", "s", "i", "b", "dom", "n", "n2", "t", "vc", "ch", "nm", "u", "da", "tz", "ts", "js", "jb", "by",
    ];
    let exprs: Vec<String> = cols
        .iter()
        .map(|c| match *c {
            // The two rewrites the reader makes on purpose (see reader.rs).
            "ts" => "to_json(ts AT TIME ZONE 'UTC')::text".to_owned(),
            "by" => "to_json(translate(encode(by, 'base64'), E'\\n', ''))::text".to_owned(),
            _ => format!("to_json({c})::text"),
        })
        .collect();
    let client = pg.client(DB).await.unwrap();
    client.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    let rows =
        client.query(&format!("SELECT id, {} FROM edge ORDER BY id", exprs.join(", ")), &[]).await.unwrap();
    let mut checked = 0;
    let mut replaced = 0;
    for row in rows {
        let id: i32 = row.get(0);
        let (_, src) = sink.docs.iter().find(|(i, _)| i == &format!("ferry_public_edge_{id}")).unwrap();
        let doc: BTreeMap<String, Box<serde_json::value::RawValue>> = serde_json::from_str(src).unwrap();
        for (k, c) in cols.iter().enumerate() {
            let ours = doc[&format!("public_edge_{c}")].get();
            let theirs: Option<String> = row.get(k + 1);
            let theirs = theirs.unwrap_or_else(|| "null".to_owned());
            // Strings are compared decoded (escaping style may differ, the
            // value may not); everything else token for token.
            // Values an index cannot hold are null, their original kept.
            let original = serde_json::from_str::<Value>(src).unwrap()["_ferry_original"]
                [format!("public_edge_{c}")]
            .clone();
            let ours = if ours == "null" && !original.is_null() {
                replaced += 1;
                serde_json::to_string(&original).unwrap()
            } else if *c == "js" || *c == "jb" {
                // json is made mapping-safe (unit-tested in types.rs): a non-object
                // top level and the non-objects of mixed arrays wrapped as {"value": ...}.
                let safe =
                    ferry_agent::postgres::types::safe_json(theirs.as_bytes()).unwrap_or(theirs.into_bytes());
                assert_eq!(
                    serde_json::from_str::<Value>(ours).unwrap(),
                    serde_json::from_slice::<Value>(&safe).unwrap(),
                    "row {id}, column {c}"
                );
                checked += 1;
                continue;
            } else {
                ours.to_owned()
            };
            let ours = ours.as_str();
            match (serde_json::from_str::<String>(ours), serde_json::from_str::<String>(&theirs)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "row {id}, column {c}"),
                _ => assert_eq!(ours, theirs, "row {id}, column {c}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8 * cols.len());
    // NaN, ±Infinity (numeric), ±infinity, BC and 5+ digit years of dates and timestamps.
    assert_eq!(replaced, 15);
}
