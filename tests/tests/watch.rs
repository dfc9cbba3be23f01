//! Watching, as an operator does with grpcurl: `WatchSyncJob` streams the
//! job's progress (counts, docs/s, rows read of PostgreSQL's estimate) and
//! ends with its final state; `WatchConnector` streams the connector's
//! changes and ends when it is deleted; job reads are summaries unless
//! `view: SYNC_JOB_VIEW_FULL`.

use serde_json::{json, Value};

use ferry_tests::process::{json_i64, Agent};
use ferry_tests::scenario::{metadata_u64, Admin, World, CONNECTORS, SYNC_JOBS};

const ROWS: u64 = 3_000;
const CONNECTOR: &str = "shop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sync_job_and_connector() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.load_items(CONNECTOR, ROWS).await.expect("load rows");
    world.pg.execute(CONNECTOR, "ANALYZE item").await.expect("analyze");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    admin.put_connector(CONNECTOR, CONNECTOR).await.expect("PutConnector");

    // Watch the connector from before an agent serves it until it is deleted.
    let grpc = world.grpc.clone();
    let addr = cp.admin_addr();
    let connector_watch = tokio::spawn(async move {
        grpc.stream(&addr, &format!("{CONNECTORS}/WatchConnector"), &json!({"connector_id": CONNECTOR}), 300)
            .await
    });

    let agent =
        Agent::start(world.agent_config(&cp.agents_url(), "agent-1", CONNECTOR).unwrap()).expect("agent");
    let result = async {
        admin.configure(CONNECTOR, world.pg_values(CONNECTOR)).await?;
        let job_id = admin.create_job(CONNECTOR).await?;
        let (messages, err) = world
            .grpc
            .stream(
                &cp.admin_addr(),
                &format!("{SYNC_JOBS}/WatchSyncJob"),
                &json!({"sync_job_id": job_id}),
                300,
            )
            .await?;
        anyhow::ensure!(err.is_none(), "the watch ended with an error: {err:?}\n{messages:?}");
        let jobs: Vec<&Value> = messages.iter().map(|m| &m["syncJob"]).collect();
        let summary: Vec<String> = jobs
            .iter()
            .map(|j| format!("{} {}", j["status"], json_i64(&j["indexedDocumentCount"])))
            .collect();
        eprintln!("WatchSyncJob messages: {summary:?}");
        anyhow::ensure!(jobs.len() >= 2, "one message only: {summary:?}");
        let last = jobs.last().unwrap();
        anyhow::ensure!(last["status"] == "SYNC_STATUS_COMPLETED", "last: {last}");
        anyhow::ensure!(json_i64(&last["indexedDocumentCount"]) == ROWS as i64, "last: {last}");
        for j in &jobs[..jobs.len() - 1] {
            anyhow::ensure!(
                matches!(j["status"].as_str(), Some("SYNC_STATUS_PENDING" | "SYNC_STATUS_IN_PROGRESS")),
                "a final state before the last message: {summary:?}"
            );
        }
        anyhow::ensure!(
            jobs.iter().any(|j| j["status"] == "SYNC_STATUS_IN_PROGRESS"),
            "no progress message before the final state: {summary:?}"
        );
        let counts: Vec<i64> = jobs.iter().map(|j| json_i64(&j["indexedDocumentCount"])).collect();
        anyhow::ensure!(counts.windows(2).all(|w| w[0] <= w[1]), "counts went back: {counts:?}");
        // PostgreSQL's estimate (ANALYZE above) for percent and ETA.
        anyhow::ensure!(metadata_u64(last, "rows_estimated") == Some(ROWS), "rows_estimated: {last}");
        anyhow::ensure!(metadata_u64(last, "rows_read") == Some(ROWS), "rows_read: {last}");
        // Summaries: no configuration in watched, listed or fetched jobs...
        anyhow::ensure!(last["connector"]["configuration"] == json!({}), "{last}");
        anyhow::ensure!(last["connector"]["indexName"] == CONNECTOR, "{last}");
        let listed =
            admin.call(&format!("{SYNC_JOBS}/ListSyncJobs"), json!({"connector_id": CONNECTOR})).await?;
        anyhow::ensure!(listed["syncJobs"][0]["connector"]["configuration"] == json!({}), "{listed}");
        let got = admin.job(&job_id).await?;
        anyhow::ensure!(got["connector"]["configuration"] == json!({}), "{got}");
        // ...and everything with the full view (sensitive values redacted).
        let full = admin
            .call(
                &format!("{SYNC_JOBS}/GetSyncJob"),
                json!({"sync_job_id": job_id, "view": "SYNC_JOB_VIEW_FULL"}),
            )
            .await?;
        let cfg = &full["syncJob"]["connector"]["configuration"];
        anyhow::ensure!(cfg["database"]["value"] == CONNECTOR, "{full}");
        anyhow::ensure!(cfg["password"]["value"] == "**********", "{full}");
        let listed = admin
            .call(
                &format!("{SYNC_JOBS}/ListSyncJobs"),
                json!({"connector_id": CONNECTOR, "view": "SYNC_JOB_VIEW_FULL"}),
            )
            .await?;
        anyhow::ensure!(
            listed["syncJobs"][0]["connector"]["configuration"]["database"]["value"] == CONNECTOR
        );

        // A watch of a job that does not exist fails at once.
        let (m, err) = world
            .grpc
            .stream(
                &cp.admin_addr(),
                &format!("{SYNC_JOBS}/WatchSyncJob"),
                &json!({"sync_job_id": "nope"}),
                30,
            )
            .await?;
        anyhow::ensure!(m.is_empty() && err.as_ref().is_some_and(|e| e.code == "NotFound"), "{err:?}");

        // The connector watch saw it go from created to connected, then a
        // completed sync, and ends when the connector is deleted.
        admin.call(&format!("{CONNECTORS}/DeleteConnector"), json!({"connector_id": CONNECTOR})).await?;
        let (messages, err) = connector_watch.await??;
        let states: Vec<String> = messages
            .iter()
            .map(|m| format!("{} {}", m["connector"]["status"], m["connector"]["lastSyncStatus"]))
            .collect();
        eprintln!("WatchConnector messages: {states:?}");
        anyhow::ensure!(err.as_ref().is_some_and(|e| e.code == "NotFound"), "{err:?} {states:?}");
        // (The agent may register before grpcurl's first read: created or needs_configuration.)
        anyhow::ensure!(messages[0]["connector"]["status"] != "CONNECTOR_STATUS_CONNECTED", "{states:?}");
        anyhow::ensure!(
            messages.iter().any(|m| m["connector"]["status"] == "CONNECTOR_STATUS_CONNECTED"
                && m["connector"]["lastSyncStatus"] == "SYNC_STATUS_COMPLETED"),
            "{states:?}"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}\n{}\n{}", cp.logs(), agent.logs());
    }
}

/// A source without settings: the connector is `configured` as soon as its
/// agent registers, syncs without any UpdateConfiguration, and
/// `UpdateConfiguration {"values": {}}` is accepted (a value is refused by name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_settings_is_configured_on_registration() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    admin
        .call(
            &format!("{CONNECTORS}/PutConnector"),
            json!({"connector_id": "k", "index_name": "k", "service_type": "constant"}),
        )
        .await
        .expect("PutConnector");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tls = world.agent_tls("py-agent").unwrap();
    let mut agent = std::process::Command::new("python3")
        .arg(root.join("tests/testdata/schemaless_agent.py"))
        .env("PYTHONPATH", root.join("sdk/python/src"))
        .env("FERRY_CONTROL_PLANE_URL", cp.agents_url())
        .env("FERRY_TLS_CA", &tls.ca)
        .env("FERRY_TLS_CERT", &tls.cert)
        .env("FERRY_TLS_KEY", &tls.key)
        .env("FERRY_CONNECTOR_ID", "k")
        .spawn()
        .expect("python3 agent");
    let result = async {
        let c =
            ferry_tests::process::wait_until("connector configured", ferry_tests::scenario::STEP, || async {
                let c = admin.connector("k").await?;
                Ok(matches!(
                    c["status"].as_str(),
                    Some("CONNECTOR_STATUS_CONFIGURED" | "CONNECTOR_STATUS_CONNECTED")
                )
                .then_some(c))
            })
            .await?;
        eprintln!("status without UpdateConfiguration: {}", c["status"]);
        admin
            .call(&format!("{CONNECTORS}/UpdateConfiguration"), json!({"connector_id": "k", "values": {}}))
            .await?;
        let e = world
            .grpc
            .call_err(
                &cp.admin_addr(),
                &format!("{CONNECTORS}/UpdateConfiguration"),
                &json!({"connector_id": "k", "values": {"x": "1"}}),
            )
            .await?;
        anyhow::ensure!(e.code == "InvalidArgument" && e.message.contains("values.x"), "{e}");
        let job = admin.create_job("k").await?;
        let j = admin.wait_completed(&job, ferry_tests::scenario::STEP).await?;
        anyhow::ensure!(json_i64(&j["indexedDocumentCount"]) == 3, "{j}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = agent.kill();
    let _ = agent.wait();
    if let Err(e) = result {
        panic!("{e:?}\n{}", cp.logs());
    }
}
