//! SIGHUP makes the control plane re-read `agents.tls`: after the files are
//! replaced with a new CA's server certificate and client CA, an agent from
//! the new CA gets in and one from the old CA is refused, without a restart.

use std::time::Duration;

use anyhow::ensure;

use ferry_tests::certs::TestPki;
use ferry_tests::process::{wait_until, Agent, AgentConfig, ClientTls};
use ferry_tests::scenario::{Admin, World, STEP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_agents_listener_certificates() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let mut cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let result = async {
        for id in ["before", "after", "stale"] {
            admin.put_connector(id, id).await?;
        }
        let registered = |id: &'static str| {
            let admin = admin.clone();
            async move {
                wait_until(&format!("an agent to register {id}"), STEP, || async {
                    let c = admin.connector(id).await?;
                    Ok((c["status"] != "CONNECTOR_STATUS_CREATED").then_some(()))
                })
                .await
            }
        };
        // The old CA's agent works before the reload.
        let old_tls = world.agent_tls("agent-old")?;
        let _before = Agent::start(
            AgentConfig::new(&cp.agents_url(), old_tls.clone()).connector("before", "postgresql"),
        )?;
        registered("before").await?;

        // Replace the files with another CA's, then SIGHUP.
        let new = TestPki::new()?;
        let server = new.server_cert()?;
        std::fs::write(&world.server_tls.cert, &server.cert_pem)?;
        std::fs::write(&world.server_tls.key, &server.key_pem)?;
        std::fs::write(&world.server_tls.client_ca, new.ca_pem())?;
        let pid = cp.service.pid().expect("control plane pid");
        ensure!(std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status()?.success());
        wait_until("the control plane to log the reload", STEP, || async {
            Ok(cp.logs().contains("SIGHUP: reloaded agents.tls").then_some(()))
        })
        .await?;
        ensure!(cp.service.is_running(), "SIGHUP stopped the control plane");

        let cert = new.write_client_cert("agent-new")?;
        let new_ca = new.write_ca()?;
        let new_tls = ClientTls { ca: new_ca.clone(), cert: cert.cert, key: cert.key };
        let _after =
            Agent::start(AgentConfig::new(&cp.agents_url(), new_tls).connector("after", "postgresql"))?;
        registered("after").await?;

        // A client certificate of the old CA no longer gets in (the agent
        // trusts the new server certificate: the refusal is the client CA's).
        let stale_tls = ClientTls { ca: new_ca, ..old_tls };
        let _stale =
            Agent::start(AgentConfig::new(&cp.agents_url(), stale_tls).connector("stale", "postgresql"))?;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let c = admin.connector("stale").await?;
        ensure!(
            c["status"] == "CONNECTOR_STATUS_CREATED",
            "an agent of the old CA registered after the reload: {c}"
        );
        let logs = cp.logs();
        ensure!(
            logs.contains("refused: certificate not signed by the client CA"),
            "no refusal logged:\n{logs}"
        );
        Ok(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
}
