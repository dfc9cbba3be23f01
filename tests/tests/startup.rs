//! How the real binaries start.
//!
//! - `FERRY_LOG` (the log filter, documented in the README) is not a
//!   configuration key: both binaries start with `FERRY_LOG=debug`, the
//!   agent registers, and the level takes effect (DEBUG lines with `debug`,
//!   no INFO lines with `warn`).
//! - An admin API whose `client_ca` is the agents' CA is refused at start
//!   (exit 2, a message naming `admin.tls.allowed_identities`) unless it has
//!   an identity allow-list; with one, an operator's certificate is served
//!   and an agent's certificate (same CA) gets `PermissionDenied`.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use ferry_tests::certs::TestPki;
use ferry_tests::osmem::Osmem;
use ferry_tests::process::{
    wait_until, workspace_bin, Agent, AgentConfig, ClientTls, ControlPlane, ControlPlaneConfig, Grpcurl,
    ServerTls, Service,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_trusting_the_agents_ca_is_refused_without_an_allow_list() {
    let es = Osmem::start().expect("start osmem-server");
    let pki = TestPki::new().unwrap();
    let server = pki.write_server_cert().unwrap();
    let ca = pki.write_ca().unwrap();
    let tls = ServerTls { cert: server.cert.clone(), key: server.key.clone(), client_ca: ca.clone() };
    let path = |p: &std::path::Path| p.display().to_string();
    let admin_tls = vec![
        ("FERRY_ADMIN__TLS__CERT".to_owned(), path(&server.cert)),
        ("FERRY_ADMIN__TLS__KEY".to_owned(), path(&server.key)),
        ("FERRY_ADMIN__TLS__CLIENT_CA".to_owned(), path(&ca)),
    ];

    // 1. The agents' CA, no allow-list: refused at start.
    let mut config = ControlPlaneConfig::new(es.url(), tls.clone()).unwrap();
    config.env = admin_tls.clone();
    let mut refused =
        Service::spawn(&workspace_bin("ferry-control-plane").unwrap(), &config.to_yaml(), &config.env)
            .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = refused.try_exit_status() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the control plane kept running:\n{}", refused.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = refused.logs();
    assert_eq!(status.code(), Some(2), "{logs}");
    assert!(
        logs.contains("admin.tls.client_ca trusts the CA that signs agent certificates")
            && logs.contains("admin.tls.allowed_identities"),
        "{logs}"
    );

    // 2. With an allow-list: the operator is served, an agent is not.
    let mut config = ControlPlaneConfig::new(es.url(), tls).unwrap();
    config.env = admin_tls;
    config.env.push(("FERRY_ADMIN__TLS__ALLOWED_IDENTITIES__0".into(), "operator-1".into()));
    let cp = ControlPlane::start(config).expect("the control plane starts with an allow-list");
    let grpc = Grpcurl::find().unwrap();
    let call = |cn: &'static str| {
        let cert = pki.write_client_cert(cn).unwrap();
        let (bin, addr, ca) = (grpc.bin().to_owned(), cp.admin_addr(), ca.clone());
        async move {
            tokio::process::Command::new(bin)
                .args(["-max-time", "30", "-cacert"])
                .arg(&ca)
                .arg("-cert")
                .arg(&cert.cert)
                .arg("-key")
                .arg(&cert.key)
                .args(["-d", "{}", &addr, &format!("{CONNECTORS}/ListConnectors")])
                .output()
                .await
                .unwrap()
        }
    };
    let operator = call("operator-1").await;
    assert!(
        operator.status.success(),
        "operator refused: {}\n{}",
        String::from_utf8_lossy(&operator.stderr),
        cp.logs()
    );
    let agent = call("agent-1").await;
    let stderr = String::from_utf8_lossy(&agent.stderr);
    assert!(!agent.status.success(), "an agent certificate listed connectors");
    assert!(stderr.contains("PermissionDenied") && stderr.contains("allowed_identities"), "{stderr}");
}
