//! Typed content indices through the real binaries: a table of ordinary PostgreSQL values that
//! dynamic mapping cannot take (NaN/±Infinity doubles and numerics, `infinity` timestamps, jsonb of
//! a different shape in every row, numeric(38,10) beyond a double's digits) syncs with zero
//! rejected documents into an index the control plane created and mapped from the catalog.
//!
//! osmem is an OpenSearch; it rejects what Elasticsearch documents as rejected (NaN in a
//! `double`, `infinity` in a `date`: see control-plane/tests/elasticsearch.rs), so zero rejections
//! here means the agent sent only values the mapping accepts. What this asserts beyond that is what
//! Ferry itself creates and sends: the mapping, the values, `_ferry_original` and the metadata.

use std::time::Duration;

use ferry_tests::process::{json_i64, Agent};
use ferry_tests::scenario::{metadata_u64, Admin, World};
use serde_json::{json, Value};

const DB: &str = "odd";

const SCHEMA: &str = r#"
    CREATE TYPE mood AS ENUM ('sad', 'happy');
    CREATE TYPE pair AS (a int, b text);
    CREATE TABLE oddities (
        id int PRIMARY KEY, s smallint, i int, b bigint, n numeric(38,10), p numeric(12,4),
        q numeric(10,0), nn numeric, r real, d double precision, t text, vc varchar(10), ch char(3),
        bo boolean, da date, ti time, ts timestamp, tz timestamptz, iv interval, jb jsonb, js json,
        ia int[], ta text[], fa float8[], by bytea, u uuid, ip inet, ci cidr, mac macaddr,
        mo money, e mood, c pair);
    INSERT INTO oddities VALUES
      (1, 32767, -2147483648, 9223372036854775807, 12345678901234567890.1234567890, 12345678.1234,
       1234567890, 0.5, 1.5, 0.1, 'he said "hi"', 'abc', 'ab', true, '2024-02-29', '13:45:06.5',
       '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02', '1 day 02:03:04',
       '{"a": {"b": [1, 2, {"c": null}]}, "d": 1.50}', '{"x": 1}', '{1,2,3}', '{"a","b c"}',
       '{1.5,2.5}', '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1',
       '10.0.0.0/8', '08:00:2b:01:02:03', 12.34, 'happy', ROW(1, 'x')),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, 'NaN', 'Infinity', '-Infinity', NULL, NULL, NULL,
       NULL, '-infinity', NULL, 'infinity', 'infinity', NULL, '"just a string"', '[1, 2]',
       NULL, NULL, '{1.5,NaN}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (3, NULL, NULL, NULL, 999999999999999999999999999.9999999999, NULL, NULL, NULL, NULL, 'NaN',
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2024-06-01 00:00:00+00', NULL,
       '[1, "two", {"three": 3}]', NULL, NULL, NULL, NULL, NULL, NULL, '10.1.2.3/16', NULL, NULL,
       NULL, NULL, NULL),
      (4, NULL, NULL, NULL, -1.5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, '2030-01-01 00:00:00+00', NULL, '42', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL),
      (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

fn ids(hits: &Value) -> Vec<String> {
    let mut v: Vec<String> = hits["hits"]["hits"]
        .as_array()
        .map(|a| a.iter().map(|h| h["_id"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oddities_sync_with_zero_rejections_into_a_mapping_from_the_catalog() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.pg.create_database(DB).await.unwrap();
    world.pg.execute(DB, SCHEMA).await.unwrap();
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    admin.put_connector("typed", "search-typed").await.unwrap();
    let agent = Agent::start(world.agent_config(&cp.agents_url(), "typer", "typed").unwrap()).expect("agent");
    let mut values = world.pg_values(DB);
    values["tables"] = json!("oddities");
    admin.configure("typed", values).await.unwrap();
    let job_id = admin.create_job("typed").await.unwrap();
    let job = admin.wait_completed(&job_id, Duration::from_secs(120)).await.unwrap_or_else(|e| {
        panic!("{e:#}\n--- agent ---\n{}\n--- control plane ---\n{}", agent.logs(), cp.logs())
    });
    assert_eq!(json_i64(&job["indexedDocumentCount"]), 5, "{job}");
    assert_eq!(metadata_u64(&job, "rejected_document_count"), Some(0), "{job}");
    // nn, r, d, da, ts, tz, fa of row 2; d and ip of row 3.
    assert_eq!(metadata_u64(&job, "unrepresentable_values"), Some(9), "{job}");
    assert!(job["metadata"]["mapping_conflicts"].is_null(), "{job}");

    // The mapping, derived from the catalog.
    let got = world.es.request(reqwest::Method::GET, "search-typed/_mapping", None).await.unwrap();
    let m = &got["search-typed"]["mappings"];
    assert_eq!(m["_meta"]["ferry"]["typed"], json!(true), "{got}");
    let p = &m["properties"];
    let ty = |c: &str| p[format!("public_oddities_{c}")]["type"].as_str().unwrap_or("<unmapped>").to_owned();
    for (c, want) in [
        ("id", "integer"),
        ("s", "integer"),
        ("i", "integer"),
        ("b", "long"),
        ("n", "double"),
        ("p", "double"),
        ("q", "long"),
        ("nn", "double"),
        ("r", "double"),
        ("d", "double"),
        ("t", "text"),
        ("vc", "text"),
        ("ch", "text"),
        ("bo", "boolean"),
        ("da", "date"),
        ("ts", "date"),
        ("tz", "date"),
        ("ti", "keyword"),
        ("iv", "keyword"),
        ("jb", "flat_object"),
        ("js", "flat_object"),
        ("ia", "integer"),
        ("ta", "text"),
        ("fa", "double"),
        ("by", "binary"),
        ("u", "keyword"),
        ("ip", "ip"),
        ("ci", "keyword"),
        ("mac", "keyword"),
        ("mo", "keyword"),
    ] {
        assert_eq!(ty(c), want, "column {c}: {got}");
    }
    let exact = |c: &str| p[format!("public_oddities_{c}")]["fields"]["exact"]["type"].clone();
    assert_eq!(exact("n"), json!("keyword"), "numeric(38,10) keeps its digits: {got}");
    assert_eq!(exact("nn"), json!("keyword"), "unconstrained numeric: {got}");
    assert_eq!(exact("p"), Value::Null, "numeric(12,4) fits a double: {got}");
    assert_eq!(p["public_oddities_t"]["fields"]["enum"]["type"], "keyword", "{got}");

    // The values sent.
    let es = &world.es;
    let doc = |id: u32| async move {
        es.get_doc("search-typed", &format!("{DB}_public_oddities_{id}")).await.unwrap().expect("document")
    };
    let d2 = doc(2).await;
    for c in ["nn", "r", "d", "da", "ts", "tz"] {
        assert_eq!(d2[format!("public_oddities_{c}")], Value::Null, "{c}: {d2}");
    }
    assert_eq!(d2["public_oddities_fa"], json!([1.5, null]), "{d2}");
    assert_eq!(
        d2["_ferry_original"],
        json!({"public_oddities_nn": "NaN", "public_oddities_r": "Infinity", "public_oddities_d": "-Infinity",
               "public_oddities_da": "-infinity", "public_oddities_ts": "infinity",
               "public_oddities_tz": "infinity", "public_oddities_fa": "[1.5,\"NaN\"]"}),
        "{d2}"
    );
    assert_eq!(d2["public_oddities_jb"], json!({"value": "just a string"}), "{d2}");
    assert_eq!(d2["public_oddities_js"], json!({"value": [1, 2]}), "{d2}");
    let d3 = doc(3).await;
    assert_eq!(
        d3["public_oddities_jb"],
        json!({"value": [{"value": 1}, {"value": "two"}, {"three": 3}]}),
        "{d3}"
    );
    assert_eq!(
        d3["_ferry_original"],
        json!({"public_oddities_d": "NaN", "public_oddities_ip": "10.1.2.3/16"})
    );
    assert_eq!(doc(4).await["public_oddities_jb"], json!({"value": 42}));
    let d1 = doc(1).await;
    assert_eq!(
        d1["public_oddities_jb"],
        json!({"a": {"b": [{"value": 1}, {"value": 2}, {"c": null}]}, "d": 1.50})
    );
    assert!(d1.get("_ferry_original").is_none(), "{d1}");

    // Range queries on the typed numeric and date fields.
    let search =
        |q: Value| async move { es.search("search-typed", &json!({"query": q, "size": 10})).await.unwrap() };
    let id = |n: u32| format!("{DB}_public_oddities_{n}");
    let hits = search(json!({"range": {"public_oddities_n": {"gte": 0}}})).await;
    assert_eq!(ids(&hits), [id(1), id(3)], "{hits}");
    let hits =
        search(json!({"range": {"public_oddities_tz": {"gte": "2024-01-01", "lt": "2025-01-01"}}})).await;
    assert_eq!(ids(&hits), [id(1), id(3)], "{hits}");
    let hits = search(json!({"term": {"public_oddities_n.exact": "12345678901234567890.1234567890"}})).await;
    assert_eq!(ids(&hits), [id(1)], "{hits}");
    drop(agent);
}
