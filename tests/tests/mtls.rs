//! Agents authenticate with client certificates, and only the right ones get
//! in: the real binaries over real sockets.
//!
//! Agents whose certificate comes from a foreign CA, has expired, or that
//! do not trust the control plane's server certificate never register: the
//! connectors they list stay `created` with no `last_seen`. An agent with a
//! good certificate, started afterwards against the same control plane,
//! registers (so the negative cases are not vacuous).

use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::{json, Value};

use ferry_tests::certs::TestPki;
use ferry_tests::osmem::Osmem;
use ferry_tests::process::{
    wait_until, Agent, AgentConfig, ClientTls, ControlPlane, ControlPlaneConfig, Grpcurl, ServerTls,
};

const CONNECTORS: &str = "ferry.v1.ConnectorService";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_agents_with_certificates_from_the_client_ca_register() {
    let es = Osmem::start().expect("start osmem-server");
    let pki = TestPki::new().unwrap();
    let foreign = TestPki::new().unwrap();
    let server = pki.write_server_cert().unwrap();
    let ca = pki.write_ca().unwrap();
    let tls = ServerTls { cert: server.cert, key: server.key, client_ca: ca.clone() };
    let cp = ControlPlane::start(ControlPlaneConfig::new(es.url(), tls).unwrap())
        .expect("start the control plane");
    let grpc = Grpcurl::find().unwrap();

    let mut agents = Vec::new();
    let result = async {
        for id in ["via-foreign-ca", "via-expired-cert", "via-untrusted-server", "via-good-cert"] {
            let put = grpc
                .call(
                    &cp.admin_addr(),
                    &format!("{CONNECTORS}/PutConnector"),
                    &json!({ "connector_id": id, "name": id, "index_name": id, "service_type": "postgresql" }),
                )
                .await?;
            ensure!(put["connector"]["status"] == "CONNECTOR_STATUS_CREATED", "{put}");
        }

        // A client certificate from another CA (same CN).
        let cert = foreign.write_client_cert("agent-1")?;
        let bad_ca = ClientTls { ca: ca.clone(), cert: cert.cert, key: cert.key };
        // An expired client certificate from the right CA.
        let cert = pki.write_expired_client_cert("agent-2")?;
        let expired = ClientTls { ca: ca.clone(), cert: cert.cert, key: cert.key };
        // A good client certificate, but the agent trusts another CA for
        // the server.
        let cert = pki.write_client_cert("agent-3")?;
        let untrusting = ClientTls { ca: foreign.write_ca()?, cert: cert.cert, key: cert.key };
        for (tls, id) in [(bad_ca, "via-foreign-ca"), (expired, "via-expired-cert"), (untrusting, "via-untrusted-server")]
        {
            agents.push(Agent::start(AgentConfig::new(&cp.agents_url(), tls).connector(id, "postgresql"))?);
        }

        // Give them time to try (and retry) the handshake.
        tokio::time::sleep(Duration::from_secs(8)).await;
        for id in ["via-foreign-ca", "via-expired-cert", "via-untrusted-server"] {
            let c = get_connector(&grpc, &cp, id).await?;
            ensure!(c["status"] == "CONNECTOR_STATUS_CREATED", "{id}: a rejected agent registered: {c}");
            ensure!(never_seen(&c["lastSeen"]), "{id}: a rejected agent heartbeated: {c}");
        }

        // Both sides say why, in words.
        let cp_logs = cp.logs();
        for expected in ["refused: certificate not signed by the client CA", "refused: certificate expired"] {
            ensure!(cp_logs.contains(expected), "the control plane did not log {expected:?}:\n{cp_logs}");
        }
        for (agent, expected) in agents.iter().zip([
            "the control plane refused this agent's certificate",
            "the control plane refused this agent's certificate",
            "does not trust the control plane's certificate",
        ]) {
            let logs = agent.logs();
            ensure!(logs.contains(expected), "the agent did not log {expected:?}:\n{logs}");
        }

        // The control: a good certificate gets in.
        let cert = pki.write_client_cert("agent-4")?;
        let good = ClientTls { ca: ca.clone(), cert: cert.cert, key: cert.key };
        agents.push(Agent::start(AgentConfig::new(&cp.agents_url(), good).connector("via-good-cert", "postgresql"))?);
        wait_until("the good agent to register", Duration::from_secs(60), || async {
            let c = get_connector(&grpc, &cp, "via-good-cert").await?;
            Ok((c["status"] == "CONNECTOR_STATUS_NEEDS_CONFIGURATION").then_some(()))
        })
        .await?;
        Ok(())
    }
    .await;

    if let Err(e) = result {
        // Unwinding drops the agents and the control plane: their logs are printed then.
        panic!("{e:?}");
    }
}

async fn get_connector(grpc: &Grpcurl, cp: &ControlPlane, id: &str) -> anyhow::Result<Value> {
    let resp = grpc
        .call(&cp.admin_addr(), &format!("{CONNECTORS}/GetConnector"), &json!({ "connector_id": id }))
        .await?;
    resp.get("connector").cloned().context("GetConnector without connector")
}

/// An unset timestamp: absent, null, or the epoch.
fn never_seen(ts: &Value) -> bool {
    ts.is_null() || ts.as_str().is_some_and(|s| s.starts_with("1970-01-01T00:00:00"))
}
