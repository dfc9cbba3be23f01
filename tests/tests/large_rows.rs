//! Large rows do not stall or lose the small ones around them (issue #6).
//!
//! Real binaries, real PostgreSQL, osmem-server. One table mixes 3,000 small
//! rows with six ~1 MB rows spread through the key order and one row over
//! the 64 MiB protocol message limit. The full sync must deliver every
//! document that fits exactly once with its content intact (the large
//! field's length), and report the oversized one on the job without sending
//! it.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{ensure, Context};
use serde_json::json;

use ferry_tests::process::{json_i64, Agent};
use ferry_tests::scenario::{metadata_u64, Admin, World, STEP};

const DB: &str = "mixed";
const CONNECTOR: &str = "mixed";
const INDEX: &str = "mixed";
const ROWS: u64 = 3_000;
/// Every this many keys a row has a [`LARGE_BYTES`] body.
const LARGE_EVERY: u64 = 500;
const LARGE_BYTES: usize = 1_000_000;
/// The key of the row whose body is over the protocol limit.
const OVERSIZED_ID: u64 = 1_234;
const OVERSIZED_BYTES: usize = 64 * 1024 * 1024;

fn doc_id(pk: u64) -> String {
    format!("{DB}_public_item_{pk}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rows_arrive_once_beside_small_ones_and_oversized_ones_are_reported() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let agent =
        Agent::start(world.agent_config(&cp.agents_url(), "agent-1", CONNECTOR).unwrap()).expect("agent");
    let t0 = Instant::now();
    let result = async {
        world.pg.create_database(DB).await?;
        world
            .pg
            .execute(
                DB,
                &format!(
                    "CREATE TABLE item (id bigint PRIMARY KEY, name text NOT NULL, body text NOT NULL);
                     INSERT INTO item
                       SELECT g, 'item ' || g,
                              CASE WHEN g % {LARGE_EVERY} = 0
                                   THEN left(repeat(md5(g::text), {LARGE_BYTES} / 32 + 1), {LARGE_BYTES})
                                   ELSE repeat(md5(g::text), 3) END
                         FROM generate_series(1, {ROWS}) g;
                     UPDATE item SET body = repeat('x', {OVERSIZED_BYTES}) WHERE id = {OVERSIZED_ID};"
                ),
            )
            .await
            .context("load the mixed table")?;
        admin.put_connector(CONNECTOR, INDEX).await?;
        admin.configure(CONNECTOR, world.pg_values(DB)).await?;
        let job_id = admin.create_job(CONNECTOR).await?;
        let job = admin.wait_completed(&job_id, STEP).await?;
        let expected = ROWS - 1;

        // The job's counts: everything that fits was indexed once (a re-sent
        // document would count twice), nothing rejected, the oversized row
        // reported by id.
        ensure!(json_i64(&job["indexedDocumentCount"]) == expected as i64, "indexedDocumentCount: {job}");
        ensure!(json_i64(&job["totalDocumentCount"]) == expected as i64, "totalDocumentCount: {job}");
        ensure!(metadata_u64(&job, "rejected_document_count") == Some(0), "{job}");
        ensure!(metadata_u64(&job, "rows_read") == Some(ROWS), "the agent read every row: {job}");
        let oversized = &job["metadata"]["oversized_documents"];
        ensure!(oversized["count"].as_f64() == Some(1.0), "oversized_documents: {job}");
        ensure!(oversized["first_ids"] == json!([doc_id(OVERSIZED_ID)]), "oversized_documents: {job}");

        // The index: exactly the rows that fit, each once.
        ensure!(world.es.count(INDEX).await? == expected, "{INDEX}/_count");
        let hits = world.es.search(INDEX, &json!({"size": ROWS + 10, "query": {"match_all": {}}})).await?;
        let hits = hits["hits"]["hits"].as_array().context("hits")?;
        let ids: BTreeSet<&str> = hits.iter().filter_map(|h| h["_id"].as_str()).collect();
        ensure!(hits.len() == ids.len(), "{} hits for {} distinct ids", hits.len(), ids.len());
        let want: BTreeSet<String> = (1..=ROWS).filter(|&pk| pk != OVERSIZED_ID).map(doc_id).collect();
        ensure!(
            ids == want.iter().map(String::as_str).collect(),
            "the ids in {INDEX} are not the rows that fit"
        );
        for h in hits {
            let id = h["_id"].as_str().unwrap_or_default();
            let pk: u64 = id.trim_end_matches('_').rsplit('_').next().unwrap_or_default().parse()?;
            ensure!(h["_source"]["public_item_name"] == format!("item {pk}"), "wrong content for {id}: {h}");
        }

        // The large documents, whole, and small ones on both sides of them.
        for pk in (LARGE_EVERY..=ROWS).step_by(LARGE_EVERY as usize).chain([LARGE_EVERY - 1, LARGE_EVERY + 1])
        {
            let doc =
                world.es.get_doc(INDEX, &doc_id(pk)).await?.with_context(|| format!("row {pk} missing"))?;
            let body =
                doc["public_item_body"].as_str().with_context(|| format!("row {pk} has no body: {doc}"))?;
            let want = if pk % LARGE_EVERY == 0 { LARGE_BYTES } else { 96 };
            ensure!(body.len() == want, "row {pk}: body of {} bytes, expected {want}", body.len());
            ensure!(doc["public_item_id"] == json!(pk), "row {pk}: {}", doc["public_item_id"]);
        }
        ensure!(
            world.es.get_doc(INDEX, &doc_id(OVERSIZED_ID)).await?.is_none(),
            "the oversized row was sent"
        );
        ensure!(
            agent.logs().contains("protocol limit"),
            "the agent did not log the oversized document:\n{}",
            agent.logs()
        );
        eprintln!("large rows: synced in {:?}", t0.elapsed());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}\n--- agent ---\n{}\n--- control plane ---\n{}", agent.logs(), cp.logs());
    }
}
