//! How the real binaries start.
//!
//! - `FERRY_LOG` (the log filter, documented in the README) is not a
//!   configuration key: both binaries start with `FERRY_LOG=debug`, the
//!   agent registers, and the level takes effect (DEBUG lines with `debug`,
//!   no INFO lines with `warn`).

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use ferry_tests::certs::TestPki;
use ferry_tests::osmem::Osmem;
use ferry_tests::process::{
    wait_until, Agent, AgentConfig, ClientTls, ControlPlane, ControlPlaneConfig, Grpcurl, ServerTls,
};

const CONNECTORS: &str = "ferry.v1.ConnectorService";

/// Whether a tracing line of `level` is in `logs` (the level is the word
/// after the timestamp; ANSI colour codes are dropped first).
fn has_level(logs: &str, level: &str) -> bool {
    logs.lines().any(|l| strip_ansi(l).split_whitespace().nth(1) == Some(level))
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_log_sets_the_log_level_of_both_binaries() {
    let es = Osmem::start().expect("start osmem-server");
    let pki = TestPki::new().unwrap();
    let server = pki.write_server_cert().unwrap();
    let ca = pki.write_ca().unwrap();
    let tls = ServerTls { cert: server.cert, key: server.key, client_ca: ca.clone() };
    let grpc = Grpcurl::find().unwrap();

    for (level, expect_debug) in [("debug", true), ("warn", false)] {
        let mut config = ControlPlaneConfig::new(es.url(), tls.clone()).unwrap();
        config.env.push(("FERRY_LOG".into(), level.into()));
        let cp = ControlPlane::start(config).expect("the control plane starts with FERRY_LOG set");
        let id = format!("log-{level}");
        grpc.call(
            &cp.admin_addr(),
            &format!("{CONNECTORS}/PutConnector"),
            &json!({"connector_id": id, "name": id, "index_name": id, "service_type": "postgresql"}),
        )
        .await
        .unwrap();
        let cert = pki.write_client_cert("agent-log").unwrap();
        let mut agent_config =
            AgentConfig::new(&cp.agents_url(), ClientTls { ca: ca.clone(), cert: cert.cert, key: cert.key })
                .connector(&id, "postgresql");
        agent_config.env.push(("FERRY_LOG".into(), level.into()));
        let agent = Agent::start(agent_config).expect("the agent starts with FERRY_LOG set");
        let registered = wait_until("the agent to register", Duration::from_secs(60), || async {
            let c = grpc
                .call(&cp.admin_addr(), &format!("{CONNECTORS}/GetConnector"), &json!({"connector_id": id}))
                .await?;
            Ok((c["connector"]["status"] != "CONNECTOR_STATUS_CREATED").then_some(()))
        })
        .await;
        let (cp_logs, agent_logs) = (cp.logs(), agent.logs());
        registered.with_context(|| format!("{cp_logs}\n{agent_logs}")).unwrap();
        for (who, logs) in [("control plane", &cp_logs), ("agent", &agent_logs)] {
            assert!(!logs.contains("unknown field"), "{who} refused FERRY_LOG:\n{logs}");
            assert_eq!(has_level(logs, "DEBUG"), expect_debug, "{who} with FERRY_LOG={level}:\n{logs}");
            if !expect_debug {
                assert!(!has_level(logs, "INFO"), "{who} with FERRY_LOG={level} logs INFO:\n{logs}");
            }
        }
        if expect_debug {
            assert!(has_level(&cp_logs, "INFO") && has_level(&agent_logs, "INFO"));
        }
    }
}
