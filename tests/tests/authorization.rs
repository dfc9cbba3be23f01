//! Only trusted agents get a connector's jobs.
//!
//! A connector bound (UpdateAllowedAgents) to `agent-good`: an agent with a
//! valid certificate but another identity (`agent-intruder`) that offers the
//! connector is refused — `ConnectorRefused` in its log, a `refusedAgents`
//! entry on the connector — and never receives the configuration or a job,
//! even while it is the only agent connected; the allowed agent runs the job.
//! Binding it too lifts the refusal. (Foreign-CA and expired certificates:
//! `mtls.rs`.)

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::{json, Value};

use ferry_tests::process::{json_i64, wait_until, Agent};
use ferry_tests::scenario::{Admin, World, CONNECTORS, STEP};

const ROWS: u64 = 200;
const CONNECTOR: &str = "shop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_agents_receive_a_bound_connectors_jobs() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.load_items(CONNECTOR, ROWS).await.expect("load rows");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let good_cfg = world.agent_config(&cp.agents_url(), "agent-good", CONNECTOR).unwrap();
    let intruder_cfg = world.agent_config(&cp.agents_url(), "agent-intruder", CONNECTOR).unwrap();
    let mut good = Agent::start(good_cfg.clone()).expect("agent-good");
    let mut intruder: Option<Agent> = None;
    let mut good_again: Option<Agent> = None;
    let t0 = Instant::now();
    let result = async {
        admin.put_connector(CONNECTOR, CONNECTOR).await?;
        // Input is checked and names the field.
        let e = world
            .grpc
            .call_err(
                &admin.addr,
                &format!("{CONNECTORS}/UpdateAllowedAgents"),
                &json!({"connector_id": CONNECTOR, "allowed_agents": ["agent-good", ""]}),
            )
            .await?;
        ensure!(e.code == "InvalidArgument" && e.message.contains("allowed_agents[1]"), "{e}");
        let bound = admin
            .call(
                &format!("{CONNECTORS}/UpdateAllowedAgents"),
                json!({"connector_id": CONNECTOR, "allowed_agents": ["agent-good"]}),
            )
            .await?;
        ensure!(bound["connector"]["allowedAgents"] == json!(["agent-good"]), "{bound}");
        admin.configure(CONNECTOR, world.pg_values(CONNECTOR)).await?;

        // The allowed agent leaves (SIGTERM: it exits promptly); the intruder
        // is the only agent connected.
        let status = good.service.terminate_within(Duration::from_secs(15));
        ensure!(status.is_some(), "agent-good did not exit within 15 s of SIGTERM:\n{}", good.logs());
        intruder = Some(Agent::start(intruder_cfg.clone())?);
        let refused = wait_until("the refusal to show on the connector", STEP, || async {
            let c = admin.connector(CONNECTOR).await?;
            let hit = c["refusedAgents"]
                .as_array()
                .and_then(|a| a.iter().find(|r| r["agentId"] == "agent-intruder").cloned());
            Ok(hit)
        })
        .await?;
        ensure!(refused["reason"].as_str().unwrap_or_default().contains("not allowed"), "{refused}");

        let job_id = admin.create_job(CONNECTOR).await?;
        // Several dispatcher rounds (200 ms) with only the intruder connected.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let job = admin.job(&job_id).await?;
        ensure!(job["status"] == "SYNC_STATUS_PENDING", "the job went to a refused agent: {job}");
        let logs = intruder.as_ref().context("intruder")?.logs();
        ensure!(logs.contains("refuses this agent for the connector"), "intruder was not told:\n{logs}");
        ensure!(!logs.contains("job started"), "the intruder started a job:\n{logs}");
        let cp_logs = cp.logs();
        ensure!(cp_logs.contains("agent refused for the connector"), "no refusal in the control plane log");
        ensure!(
            !cp_logs
                .lines()
                .any(|l| l.contains("configuration checked by the agent") && l.contains("agent-intruder")),
            "the intruder was sent the configuration:\n{cp_logs}"
        );

        // The allowed agent comes back and runs it.
        good_again = Some(Agent::start(good_cfg.clone())?);
        let job = admin.wait_completed(&job_id, STEP).await?;
        ensure!(job["workerHostname"] == "agent-good", "{job}");
        ensure!(json_i64(&job["indexedDocumentCount"]) == ROWS as i64, "{job}");
        ensure!(world.es.count(CONNECTOR).await? == ROWS, "_count");
        let logs = intruder.as_ref().context("intruder")?.logs();
        ensure!(!logs.contains("job started"), "the intruder started a job:\n{logs}");

        // Allowing the intruder too clears its refusal.
        let c = admin
            .call(
                &format!("{CONNECTORS}/UpdateAllowedAgents"),
                json!({"connector_id": CONNECTOR, "allowed_agents": ["agent-good", "agent-intruder"]}),
            )
            .await?;
        let refused: &Value = &c["connector"]["refusedAgents"];
        ensure!(refused.as_array().is_none_or(|a| a.is_empty()), "{c}");
        eprintln!("authorization: {:?}", t0.elapsed());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
}
