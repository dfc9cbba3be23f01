//! The mistakes of a user's first hour say what to do (issue 17), with the
//! real binaries, PostgreSQL and osmem-server:
//!
//! - a pending job nobody can serve says why in `metadata.pending_reason`:
//!   no agent serves the connector, then only an agent refused for it does;
//!   the reason goes away when an allowed agent takes the job;
//! - an agent offering a connector that does not exist is told so and logs
//!   the `PutConnector` call (with its service type) that fixes it;
//! - `AgentService` and `EnrollmentService` called on the admin port answer
//!   `Unimplemented` saying where they are served;
//! - `UpdateFiltering` with only `advanced_snippet` keeps the basic rules;
//! - a cron expression out of range names the real bound;
//! - log files (not terminals) get no ANSI colours.

use anyhow::ensure;
use serde_json::{json, Value};

use ferry_tests::process::{wait_until, Agent};
use ferry_tests::scenario::{Admin, World, CONNECTORS, STEP};

const CONNECTOR: &str = "shop";

fn pending_reason(job: &Value) -> String {
    job["metadata"]["pending_reason"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_say_what_to_do() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.load_items(CONNECTOR, 20).await.expect("load rows");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let mut agents: Vec<Agent> = Vec::new();
    let result = async {
        // AgentService on the admin port.
        let e = world
            .grpc
            .call_err(&cp.admin_addr(), "ferry.v1.AgentService/Session", &json!({}))
            .await?;
        ensure!(e.code == "Unimplemented", "{e:?}");
        ensure!(e.message.contains("agents listener") && e.message.contains("agents.listen"), "{e:?}");
        let e = world
            .grpc
            .call_err(&cp.admin_addr(), "ferry.v1.EnrollmentService/GetCaCertificate", &json!({}))
            .await?;
        ensure!(e.code == "Unimplemented" && e.message.contains("agents listener"), "{e:?}");

        // An agent offering a connector nobody created is told what to do.
        agents.push(Agent::start(world.agent_config(&cp.agents_url(), "agent-1", CONNECTOR)?)?);
        let logs = wait_until("the agent to be told its connector does not exist", STEP, || async {
            let logs = agents[0].logs();
            Ok(logs.contains("does not exist").then_some(logs))
        })
        .await?;
        ensure!(
            logs.contains("PutConnector") && logs.contains(r#"\"service_type\": \"postgresql\""#)
                || logs.contains(r#""service_type": "postgresql""#),
            "the agent's log does not say how to create the connector:\n{logs}"
        );
        drop(agents.pop());

        // A configured connector whose agent went away: the job says why it waits.
        admin.put_connector(CONNECTOR, CONNECTOR).await?;
        agents.push(Agent::start(world.agent_config(&cp.agents_url(), "agent-1", CONNECTOR)?)?);
        admin.configure(CONNECTOR, world.pg_values(CONNECTOR)).await?;
        drop(agents.pop());
        let job_id = admin.create_job(CONNECTOR).await?;
        let job = wait_until("the pending job to say why", STEP, || async {
            let j = admin.job(&job_id).await?;
            ensure!(j["status"] == "SYNC_STATUS_PENDING", "{j}");
            Ok(pending_reason(&j).contains("no connected agent serves").then_some(j))
        })
        .await?;
        ensure!(pending_reason(&job).contains("service_type: postgresql"), "{job}");

        // Bound to another agent: only a refused agent offers it.
        admin
            .call(
                &format!("{CONNECTORS}/UpdateAllowedAgents"),
                json!({"connector_id": CONNECTOR, "allowed_agents": ["agent-2"]}),
            )
            .await?;
        agents.push(Agent::start(world.agent_config(&cp.agents_url(), "agent-1", CONNECTOR)?)?);
        let job = wait_until("the pending job to name the refused agent", STEP, || async {
            let j = admin.job(&job_id).await?;
            ensure!(j["status"] == "SYNC_STATUS_PENDING", "{j}");
            Ok(pending_reason(&j).contains("only agents not allowed").then_some(j))
        })
        .await?;
        let reason = pending_reason(&job);
        ensure!(reason.contains("agent-1") && reason.contains("UpdateAllowedAgents"), "{reason}");

        // The allowed agent takes it; the reason is gone.
        agents.push(Agent::start(world.agent_config(&cp.agents_url(), "agent-2", CONNECTOR)?)?);
        let done = admin.wait_completed(&job_id, STEP).await?;
        ensure!(pending_reason(&done).is_empty(), "the reason outlived the wait: {done}");
        ensure!(done["workerHostname"] == "agent-2", "{done}");

        // UpdateFiltering with only advanced rules keeps the basic ones.
        admin
            .call(
                &format!("{CONNECTORS}/UpdateFiltering"),
                json!({"connector_id": CONNECTOR, "rules": [{"policy": "exclude", "field": "id", "rule": "<", "value": "5"}]}),
            )
            .await?;
        let r = admin
            .call(
                &format!("{CONNECTORS}/UpdateFiltering"),
                json!({"connector_id": CONNECTOR, "advanced_snippet": [{"tables": ["item"],
                    "query": "SELECT id, name FROM item", "id_columns": ["id"]}]}),
            )
            .await?;
        let draft = &r["connector"]["filtering"][0]["draft"];
        let rules = draft["rules"].as_array().cloned().unwrap_or_default();
        ensure!(rules.len() == 2 && rules[0]["field"] == "id", "basic rules dropped: {draft}");
        ensure!(draft["advancedSnippet"][0]["tables"][0] == "item", "advanced rules missing: {draft}");

        // Cron bounds are named as they are.
        let e = world
            .grpc
            .call_err(
                &cp.admin_addr(),
                &format!("{CONNECTORS}/UpdateScheduling"),
                &json!({"connector_id": CONNECTOR, "scheduling": {"full": {"enabled": true, "interval": "0 0 25 * * ?"}}}),
            )
            .await?;
        ensure!(e.code == "InvalidArgument" && e.stderr.contains("Hours must be at most 23."), "{e:?}");

        // Logs written to files have no colours (ANSI escapes) in them.
        ensure!(!cp.logs().contains('\u{1b}'), "ANSI escapes in the control plane's log file");
        ensure!(!agents[0].logs().contains('\u{1b}'), "ANSI escapes in the agent's log file");
        ensure!(!e.stderr.contains("less than 23"), "{e:?}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        for a in &agents {
            eprintln!("----- agent log -----\n{}", a.logs());
        }
        eprintln!("----- control plane log -----\n{}", cp.logs());
        panic!("{e:?}");
    }
}
