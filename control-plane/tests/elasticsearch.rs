//! The Elasticsearch door against a real osmem-server (an in-memory OpenSearch-compatible
//! server), with a fault-injecting proxy for the retry paths.

use std::time::Duration;

use bytes::Bytes;
use ferry_control_plane::elasticsearch::index::{
    delete_stale, ensure_index, generation_fragment, GENERATION_FIELD,
};
use ferry_control_plane::elasticsearch::{
    handshake, BulkConfig, BulkDoc, BulkIndexer, Concurrency, Distribution, EsClient, EsClientConfig,
    EsError, Refresh,
};
use ferry_tests::faults::{FaultPlan, FaultProxy};
use ferry_tests::osmem::Osmem;
use serde_json::{json, Value};

fn client(url: &str) -> EsClient {
    EsClient::new(&EsClientConfig::new(url)).expect("client")
}

fn docs(range: std::ops::Range<u32>) -> Vec<BulkDoc> {
    range
        .map(|i| {
            BulkDoc::index(
                format!("doc-{i}"),
                Bytes::from(format!(r#"{{"n":{i},"title":"document number {i}"}}"#)),
            )
        })
        .collect()
}

fn fast_retries() -> BulkConfig {
    BulkConfig {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        max_retries: 12,
        ..BulkConfig::default()
    }
}

/// Runs `index_batch` for `batch`-sized slices of `docs`, all concurrently.
async fn index_concurrently(
    indexer: &BulkIndexer,
    index: &str,
    docs: Vec<BulkDoc>,
    batch: usize,
    extra: &[u8],
) -> Vec<Result<ferry_control_plane::elasticsearch::BulkOutcome, EsError>> {
    let mut tasks = Vec::new();
    for chunk in docs.chunks(batch) {
        let (indexer, index, chunk, extra) =
            (indexer.clone(), index.to_string(), chunk.to_vec(), extra.to_vec());
        tasks.push(tokio::spawn(async move { indexer.index_batch(&index, &chunk, &extra).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn version_of_osmem_is_accepted() {
    let osmem = Osmem::start().unwrap();
    let v = handshake(&client(osmem.url())).await.unwrap();
    assert_eq!(v.distribution, Distribution::OpenSearch);
    assert!(matches!(v.major, 2 | 3), "{v}");
}

#[tokio::test]
async fn unreachable_cluster_is_a_transport_error_naming_the_url() {
    let port = ferry_tests::process::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let err = client(&url).info().await.unwrap_err();
    assert!(matches!(err, EsError::Transport { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&url) && msg.contains("check elasticsearch.host") && msg.contains("(elasticsearch.ca)"),
        "{msg}"
    );
}

#[tokio::test]
async fn documents_with_optimistic_concurrency() {
    let osmem = Osmem::start().unwrap();
    let es = client(osmem.url());
    let idx = "occ";
    assert!(!es.index_exists(idx).await.unwrap());
    assert!(es.create_index(idx, &json!({})).await.unwrap());
    assert!(!es.create_index(idx, &json!({})).await.unwrap(), "already exists is fine");
    assert!(es.index_exists(idx).await.unwrap());

    // An id that needs percent-encoding.
    let id = "conn/1 ?#é";
    let created =
        es.put_doc(idx, id, &json!({"status": "created"}), Concurrency::Create, Refresh::True).await.unwrap();
    assert_eq!(created.result, "created");
    assert_eq!(created.id, id);
    let again =
        es.put_doc(idx, id, &json!({"status": "x"}), Concurrency::Create, Refresh::No).await.unwrap_err();
    assert!(matches!(again, EsError::Conflict { .. }), "{again:?}");

    let doc = es.get_doc::<Value>(idx, id).await.unwrap().expect("exists");
    assert_eq!(doc.seq_no, created.seq_no);
    assert_eq!(doc.source["status"], "created");
    let updated = es
        .put_doc(idx, id, &json!({"status": "configured"}), Concurrency::IfMatch(doc.seq_no), Refresh::True)
        .await
        .unwrap();
    assert!(updated.seq_no.seq_no > doc.seq_no.seq_no);
    // The stale token loses, for put and for partial update.
    let stale = es
        .put_doc(idx, id, &json!({"status": "connected"}), Concurrency::IfMatch(doc.seq_no), Refresh::No)
        .await
        .unwrap_err();
    assert!(matches!(&stale, EsError::Conflict { id: i, .. } if i == id), "{stale:?}");
    let stale =
        es.update_partial(idx, id, &json!({"error": "x"}), Some(doc.seq_no), Refresh::No).await.unwrap_err();
    assert!(matches!(stale, EsError::Conflict { .. }), "{stale:?}");

    let partial = es
        .update_partial(idx, id, &json!({"last_seen": "now"}), Some(updated.seq_no), Refresh::True)
        .await
        .unwrap();
    let doc = es.get_doc::<Value>(idx, id).await.unwrap().unwrap();
    assert_eq!(doc.seq_no, partial.seq_no);
    assert_eq!(doc.source, json!({"status": "configured", "last_seen": "now"}));

    let hits = es
        .search::<Value>(idx, &json!({"query": {"term": {"status": "configured"}}, "sort": [{"_id": "asc"}]}))
        .await
        .unwrap();
    assert_eq!(hits.total, 1);
    assert_eq!(hits.hits[0].id, id);
    assert_eq!(hits.hits[0].seq_no(), Some(partial.seq_no));
    assert_eq!(es.count(idx, Some(&json!({"term": {"status": "configured"}}))).await.unwrap(), 1);

    let auto = es.create_doc_auto_id(idx, &json!({"status": "pending"}), Refresh::True).await.unwrap();
    assert!(es.get_doc::<Value>(idx, &auto.id).await.unwrap().is_some());

    assert!(es.get_doc::<Value>(idx, "missing").await.unwrap().is_none());
    let missing = es.update_partial(idx, "missing", &json!({"a": 1}), None, Refresh::No).await.unwrap_err();
    assert!(matches!(missing, EsError::NotFound { .. }), "{missing:?}");
    let no_index = es.get_doc::<Value>("no-such-index", "x").await.unwrap_err();
    assert!(
        matches!(&no_index, EsError::NotFound { error_type, .. } if error_type == "index_not_found_exception")
    );

    assert!(es.delete_doc(idx, id, Refresh::True).await.unwrap());
    assert!(!es.delete_doc(idx, id, Refresh::True).await.unwrap());
    assert_eq!(es.count(idx, None).await.unwrap(), 1);
}

#[tokio::test]
async fn concurrent_bulk_batches_index_every_document() {
    let osmem = Osmem::start().unwrap();
    let es = client(osmem.url());
    let idx = "content";
    ensure_index(&es, idx).await.unwrap();
    // Small requests, so each batch is split into several.
    let indexer = BulkIndexer::new(es.clone(), BulkConfig { max_request_bytes: 16 * 1024, ..fast_retries() });
    let results = index_concurrently(&indexer, idx, docs(0..2000), 250, &generation_fragment(1)).await;
    let mut indexed = 0;
    for r in results {
        let o = r.unwrap();
        assert_eq!((o.failed, o.retried_items, o.retried_requests), (0, 0, 0), "{o:?}");
        assert!(o.bytes > 0 && o.bytes_sent > o.bytes);
        indexed += o.indexed;
    }
    assert_eq!(indexed, 2000);
    assert_eq!(osmem.count(idx).await.unwrap(), 2000);
    let d = osmem.get_doc(idx, "doc-1234").await.unwrap().unwrap();
    assert_eq!(d, json!({"_ferry_sync_generation": 1, "n": 1234, "title": "document number 1234"}));
}

#[tokio::test]
async fn mapping_failures_are_permanent_and_counted_others_indexed() {
    let osmem = Osmem::start().unwrap();
    let es = client(osmem.url());
    let idx = "typed";
    es.create_index(idx, &json!({"mappings": {"properties": {"n": {"type": "long"}}}})).await.unwrap();
    let mut batch = docs(0..50);
    batch[7].source = Bytes::from_static(br#"{"n":"not a number"}"#);
    batch[9].source = Bytes::from_static(b"{\"n\":\n1}");
    batch[11].source = Bytes::from_static(b"{}");
    let indexer = BulkIndexer::new(es.clone(), fast_retries());
    let o = indexer.index_batch(idx, &batch, b"").await.unwrap();
    assert_eq!((o.indexed, o.failed), (48, 2), "{o:?}");
    assert_eq!(o.failures.len(), 2);
    let invalid = o.failures.iter().find(|f| f.id == "doc-9").expect("invalid source reported");
    assert_eq!((invalid.status, invalid.error_type.as_str()), (0, "invalid_source"));
    let mapping = o.failures.iter().find(|f| f.id == "doc-7").expect("mapping failure reported");
    assert_eq!(mapping.status, 400);
    assert_eq!(mapping.error_type, "mapper_parsing_exception");
    assert!(mapping.reason.contains("[n]"), "{}", mapping.reason);
    assert_eq!(osmem.count(idx).await.unwrap(), 48);
    assert_eq!(osmem.get_doc(idx, "doc-11").await.unwrap(), Some(json!({})));
}

#[tokio::test]
async fn only_the_first_failures_are_kept_but_all_are_counted() {
    let osmem = Osmem::start().unwrap();
    let es = client(osmem.url());
    let batch: Vec<BulkDoc> =
        (0..20).map(|i| BulkDoc::index(format!("bad-{i}"), Bytes::from_static(b"[1]"))).collect();
    let o = BulkIndexer::new(es, fast_retries()).index_batch("x", &batch, b"").await.unwrap();
    assert_eq!((o.indexed, o.failed, o.failures.len(), o.bytes_sent), (0, 20, 5, 0));
}

#[tokio::test]
async fn delete_stale_removes_exactly_older_generations() {
    let osmem = Osmem::start().unwrap();
    let es = client(osmem.url());
    let idx = "gen";
    ensure_index(&es, idx).await.unwrap();
    let indexer = BulkIndexer::new(es.clone(), fast_retries());
    let first = indexer.index_batch(idx, &docs(0..300), &generation_fragment(1)).await.unwrap();
    assert_eq!(first.indexed, 300);
    // A document nobody tagged (written by hand) is stale too.
    osmem.request(reqwest::Method::PUT, &format!("{idx}/_doc/manual"), Some(&json!({"n": 1}))).await.unwrap();
    // The second full sync sees only 200 of them (and the ids 100..300 again).
    let second = indexer.index_batch(idx, &docs(100..300), &generation_fragment(2)).await.unwrap();
    assert_eq!(second.indexed, 200);
    let deleted = delete_stale(&es, idx, 2).await.unwrap();
    assert_eq!(deleted, 101);
    assert_eq!(es.count(idx, None).await.unwrap(), 200);
    assert_eq!(es.count(idx, Some(&json!({"term": {GENERATION_FIELD: 2}}))).await.unwrap(), 200);
    assert!(osmem.get_doc(idx, "doc-99").await.unwrap().is_none());
    assert!(osmem.get_doc(idx, "doc-100").await.unwrap().is_some());
    // Nothing left to delete.
    assert_eq!(delete_stale(&es, idx, 2).await.unwrap(), 0);
}

#[tokio::test]
async fn pre_created_index_keeps_its_mapping() {
    let osmem = Osmem::start().unwrap();
    let es = client(osmem.url());
    let idx = "users-own";
    let mapping = json!({"mappings": {"dynamic": "strict", "properties": {
        "title": {"type": "keyword"}, "n": {"type": "integer"}}}});
    osmem.request(reqwest::Method::PUT, idx, Some(&mapping)).await.unwrap();
    ensure_index(&es, idx).await.unwrap();
    ensure_index(&es, idx).await.unwrap(); // idempotent
    let got = osmem.request(reqwest::Method::GET, &format!("{idx}/_mapping"), None).await.unwrap();
    let m = &got[idx]["mappings"];
    assert_eq!(m["dynamic"], "strict", "{got}");
    assert_eq!(m["properties"]["title"]["type"], "keyword", "{got}");
    assert_eq!(m["properties"]["n"]["type"], "integer", "{got}");
    assert_eq!(m["properties"][GENERATION_FIELD]["type"], "long", "{got}");
    // Strict mapping now accepts our field (and still refuses unknown ones).
    let mut batch = docs(0..10);
    batch[3].source = Bytes::from_static(br#"{"n":3,"unknown":true}"#);
    let o =
        BulkIndexer::new(es, fast_retries()).index_batch(idx, &batch, &generation_fragment(5)).await.unwrap();
    assert_eq!((o.indexed, o.failed), (9, 1), "{o:?}");
    assert_eq!(o.failures[0].error_type, "strict_dynamic_mapping_exception");
}

#[tokio::test]
async fn item_and_request_429s_are_retried_until_every_document_is_in() {
    let osmem = Osmem::start().unwrap();
    let proxy = FaultProxy::start(osmem.url(), FaultPlan { reject_every_nth_bulk: 3, item_429_every_nth: 4 })
        .await
        .unwrap();
    let es = client(&proxy.url());
    let idx = "overloaded";
    ensure_index(&es, idx).await.unwrap();
    let indexer = BulkIndexer::new(es, BulkConfig { max_request_bytes: 32 * 1024, ..fast_retries() });
    let results = index_concurrently(&indexer, idx, docs(0..1200), 300, &generation_fragment(3)).await;
    let (mut indexed, mut retried_items, mut retried_requests) = (0, 0, 0);
    for r in results {
        let o = r.unwrap();
        assert_eq!(o.failed, 0, "{o:?}");
        indexed += o.indexed;
        retried_items += o.retried_items;
        retried_requests += o.retried_requests;
    }
    assert_eq!(indexed, 1200);
    assert!(proxy.rejected_items() > 0 && proxy.rejected_requests() > 0);
    assert_eq!(retried_items, proxy.rejected_items());
    assert_eq!(retried_requests, proxy.rejected_requests());
    assert_eq!(osmem.count(idx).await.unwrap(), 1200);
}

#[tokio::test]
async fn retries_give_up_with_an_error() {
    let osmem = Osmem::start().unwrap();
    let proxy = FaultProxy::start(osmem.url(), FaultPlan { reject_every_nth_bulk: 1, item_429_every_nth: 0 })
        .await
        .unwrap();
    let indexer = BulkIndexer::new(client(&proxy.url()), BulkConfig { max_retries: 2, ..fast_retries() });
    let err = indexer.index_batch("nowhere", &docs(0..10), b"").await.unwrap_err();
    match &err {
        EsError::RetriesExhausted { attempts, pending, last, .. } => {
            assert_eq!((*attempts, *pending), (3, 10));
            assert!(last.contains("429"), "{last}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(proxy.rejected_requests(), 3);
}

/// A one-shot HTTP server that records the request head and answers `status` with `body`.
async fn one_shot_server(status: u16, body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(reply.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&head).to_lowercase()
    });
    (url, task)
}

#[tokio::test]
async fn every_request_carries_the_connectors_origin_and_the_api_key() {
    let (url, head) = one_shot_server(
        200,
        r#"{"cluster_name":"c","version":{"number":"8.15.0","build_flavor":"default"}}"#,
    )
    .await;
    let mut cfg = EsClientConfig::new(url);
    cfg.auth = ferry_control_plane::elasticsearch::EsAuth::ApiKey("a2V5OnNlY3JldA==".into());
    let v = handshake(&EsClient::new(&cfg).unwrap()).await.unwrap();
    assert_eq!((v.distribution, v.major), (Distribution::Elasticsearch, 8));
    let head = head.await.unwrap();
    assert!(head.contains("\r\nx-elastic-product-origin: connectors\r\n"), "{head}");
    assert!(head.contains("\r\nauthorization: apikey a2v5onnly3jlda==\r\n"), "{head}");
}

#[tokio::test]
async fn rejected_credentials_are_an_auth_error_without_the_secret() {
    let (url, head) = one_shot_server(
        401,
        r#"{"error":{"type":"security_exception","reason":"unable to authenticate user [elastic]"},"status":401}"#,
    )
    .await;
    let mut cfg = EsClientConfig::new(url);
    cfg.auth = ferry_control_plane::elasticsearch::EsAuth::Basic {
        username: "elastic".into(),
        password: "hunter2".into(),
    };
    let err = EsClient::new(&cfg).unwrap().info().await.unwrap_err();
    assert!(matches!(err, EsError::Auth { status: 401, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("check elasticsearch.api_key or elasticsearch.username and elasticsearch.password"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2") && !format!("{err:?}").contains("hunter2"), "{msg}");
    assert!(head.await.unwrap().contains("authorization: basic "));
}

#[test]
fn bulk_indexer_is_cheap_to_share() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<BulkIndexer>();
    shareable::<EsClient>();
}

/// A missing index is created typed: Elastic's content index settings and dynamic template,
/// `_meta.ferry.typed`; described fields are then added (never changed), and values of those
/// types index, while what Elasticsearch documents as rejected (NaN in a double, `infinity` in a
/// date) is rejected — which is why the agent sends such values as null.
#[tokio::test]
async fn ferry_creates_typed_content_indices_and_adds_described_fields() {
    use ferry_control_plane::elasticsearch::mapping::{additions, TypedIndex};
    use ferry_sdk::{FieldKind, FieldSpec};
    let osmem = Osmem::start().unwrap();
    let es = client(osmem.url());
    let idx = "search-typed";
    ensure_index(&es, idx).await.unwrap();
    ensure_index(&es, idx).await.unwrap(); // idempotent
    let got = osmem.request(reqwest::Method::GET, &format!("{idx}/_mapping"), None).await.unwrap();
    let m = &got[idx]["mappings"];
    assert_eq!(m["_meta"]["ferry"]["typed"], json!(true), "{got}");
    assert_eq!(m["_meta"]["ferry"]["json_type"], json!("flat_object"), "osmem is OpenSearch: {got}");
    assert_eq!(m["dynamic_templates"][0]["data"]["mapping"]["type"], "text", "{got}");
    assert_eq!(m["properties"][GENERATION_FIELD]["type"], "long", "{got}");
    assert_eq!(m["properties"]["id"]["type"], "keyword", "{got}");
    let settings = osmem.request(reqwest::Method::GET, &format!("{idx}/_settings"), None).await.unwrap();
    let analysis = &settings[idx]["settings"]["index"]["analysis"];
    assert!(analysis["analyzer"]["iq_text_base"].is_object(), "{settings}");

    let typed = TypedIndex::from_mapping(&es.get_mapping(idx).await.unwrap()).expect("typed");
    let f = |name: &str, kind| FieldSpec { name: name.into(), kind, array: false, source_type: "t".into() };
    let fields = vec![
        f("amount", FieldKind::Decimal { precision: 38, scale: 10 }),
        f("price", FieldKind::Decimal { precision: 12, scale: 4 }),
        f("ratio", FieldKind::Double),
        f("at", FieldKind::Date),
        f("doc", FieldKind::Object),
        f("name", FieldKind::Text),
    ];
    let (add, conflicts) = additions(&typed, &fields);
    assert!(conflicts.is_empty());
    es.put_mapping(idx, &json!({ "properties": add })).await.unwrap();
    let m = es.get_mapping(idx).await.unwrap();
    assert_eq!(m["properties"]["amount"]["type"], "double", "{m}");
    assert_eq!(m["properties"]["amount"]["fields"]["exact"]["type"], "keyword", "{m}");
    assert_eq!(m["properties"]["price"]["type"], "double", "{m}");
    assert_eq!(m["properties"]["at"]["type"], "date", "{m}");
    assert_eq!(m["properties"]["doc"]["type"], "flat_object", "{m}");
    assert_eq!(m["properties"]["name"]["fields"]["enum"]["type"], "keyword", "{m}");
    // Described again with one type changed: nothing is changed, the conflict is reported.
    let again = TypedIndex::from_mapping(&m).unwrap();
    let (add, conflicts) = additions(&again, &[f("ratio", FieldKind::Text), f("new", FieldKind::Long)]);
    assert_eq!(add.keys().collect::<Vec<_>>(), ["new"]);
    assert_eq!(conflicts.len(), 1);

    let batch = vec![
        BulkDoc::index("ok".into(), Bytes::from_static(br#"{"amount":12345678901234567890.1234567890,"ratio":0.5,"at":"2024-01-02T03:04:05.123456+00:00","doc":{"k":[1,{"z":null}]},"name":"Hello"}"#)),
        BulkDoc::index("nan".into(), Bytes::from_static(br#"{"ratio":"NaN"}"#)),
        BulkDoc::index("inf".into(), Bytes::from_static(br#"{"at":"infinity"}"#)),
        BulkDoc::index("nulls".into(), Bytes::from_static(br#"{"ratio":null,"at":null,"_ferry_original":{"ratio":"NaN","at":"infinity"}}"#)),
    ];
    let o = BulkIndexer::new(es.clone(), fast_retries()).index_batch(idx, &batch, b"").await.unwrap();
    assert_eq!((o.indexed, o.failed), (2, 2), "{o:?}");
    let mut rejected: Vec<&str> = o.failures.iter().map(|f| f.id.as_str()).collect();
    rejected.sort();
    assert_eq!(rejected, ["inf", "nan"]);
    let exact = json!({"term": {"amount.exact": "12345678901234567890.1234567890"}});
    assert_eq!(es.count(idx, Some(&exact)).await.unwrap(), 1);
}

/// An index the user created is never marked typed, so described fields are never added to it.
#[tokio::test]
async fn a_user_index_is_not_typed() {
    use ferry_control_plane::elasticsearch::mapping::TypedIndex;
    let osmem = Osmem::start().unwrap();
    let es = client(osmem.url());
    osmem
        .request(
            reqwest::Method::PUT,
            "mine",
            Some(&json!({"mappings": {"properties": {"a": {"type": "keyword"}}}})),
        )
        .await
        .unwrap();
    ensure_index(&es, "mine").await.unwrap();
    assert!(TypedIndex::from_mapping(&es.get_mapping("mine").await.unwrap()).is_none());
}
