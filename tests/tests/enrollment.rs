//! Enrollment through the real binaries: `certs init` makes the CA (no
//! openssl), the operator asks the admin API for a token (grpcurl), and an
//! agent started with only the URL, the token and the CA fingerprint makes
//! its own key, enrolls, syncs, and restarts from its state directory.
//! Refused, each with a message saying why: a reused token, an expired one,
//! a wrong fingerprint (the agent refuses before sending the token), a
//! revoked agent's next session, and a Session without a client
//! certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::{json, Value};

use ferry_tests::process::{wait_until, workspace_bin, workspace_root, ControlPlane, ServerTls, Service};

use ferry_tests::scenario::{Admin, World, STEP};

const FLEET: &str = "ferry.v1.FleetService";

fn agent_yaml(url: &str, token: &str, fingerprint: &str, state_dir: &Path, connector: &str) -> String {
    let q = |s: &str| Value::String(s.to_owned()).to_string();
    format!(
        "control_plane:\n  url: {}\nenrollment:\n  token: {}\n  ca_fingerprint: {}\nstate_dir: {}\n\
         connectors:\n  - connector_id: {}\n    service_type: postgresql\n",
        q(url),
        q(token),
        q(fingerprint),
        q(&state_dir.display().to_string()),
        q(connector)
    )
}

fn start_agent(yaml: &str) -> anyhow::Result<Service> {
    Service::spawn(&workspace_bin("ferry-agent")?, yaml, &[])
}

/// Waits for the agent to exit on its own; returns its logs.
async fn wait_exit(agent: &mut Service) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + STEP;
    while agent.try_exit_status().is_none() {
        ensure!(tokio::time::Instant::now() < deadline, "the agent did not give up:\n{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(agent.logs())
}

async fn token(admin: &Admin, agent_id: &str, ttl: u32) -> anyhow::Result<(String, String)> {
    let r = admin
        .call(&format!("{FLEET}/CreateEnrollmentToken"), json!({"agent_id": agent_id, "ttl_seconds": ttl}))
        .await?;
    let t = r["token"].as_str().context("no token")?.to_owned();
    let f = r["caFingerprint"].as_str().context("no caFingerprint")?.to_owned();
    ensure!(f.len() == 64 && r["expiresAt"].is_string(), "{r}");
    Ok((t, f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_enrolls_with_a_token_and_bad_tokens_are_refused() {
    let world = World::start().expect("PostgreSQL, osmem, grpcurl");
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let out = Command::new(workspace_bin("ferry-control-plane").unwrap())
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "certs init: {}", String::from_utf8_lossy(&out.stderr));
    let mut cfg = world.control_plane_config(world.es.url()).unwrap();
    cfg.tls = ServerTls {
        cert: certs.join("server.pem"),
        key: certs.join("server-key.pem"),
        client_ca: certs.join("ca.pem"),
    };
    cfg.env.push(("FERRY_ENROLLMENT__CA_KEY".into(), certs.join("ca-key.pem").display().to_string()));
    let cp = ControlPlane::start(cfg).expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let url = cp.agents_url();
    let state = |n: &str| -> PathBuf { tmp.path().join(n) };
    let result = async {
        world.load_items("enroll", 300).await?;
        admin.put_connector("enrolled", "enrolled").await?;

        // No client certificate: the handshake succeeds (enrollment is on)
        // but a Session is refused.
        let proto_dir = workspace_root().join("proto");
        let out = tokio::process::Command::new(world.grpc.bin())
            .args(["-insecure", "-max-time", "10", "-import-path"])
            .arg(&proto_dir)
            .args(["-proto", "ferry/v1/agent.proto", "-d", "{}"])
            .arg(cp.config.agents_listen.to_string())
            .arg("ferry.v1.AgentService/Session")
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success() && stderr.contains("Unauthenticated"), "a cert-less Session: {stderr}");
        ensure!(stderr.contains("no client certificate"), "{stderr}");

        // Enroll with only URL + token + fingerprint, then sync.
        let (tok, fp) = token(&admin, "enrolled-1", 600).await?;
        let yaml = agent_yaml(&url, &tok, &fp, &state("a1"), "enrolled");
        let mut a1 = start_agent(&yaml)?;
        admin.configure("enrolled", world.pg_values("enroll")).await?;
        let job = admin.create_job("enrolled").await?;
        let done = admin.wait_completed(&job, STEP).await?;
        ensure!(done["indexedDocumentCount"] == "300" || done["indexedDocumentCount"] == 300, "{done}");
        use std::os::unix::fs::PermissionsExt;
        let key = state("a1").join("agent-key.pem");
        ensure!(std::fs::metadata(&key)?.permissions().mode() & 0o777 == 0o600, "key not 0600");
        ensure!(cp.logs().contains("agent enrolled"), "{}", cp.logs());
        let fleet = admin.call(&format!("{FLEET}/ListAgents"), json!({})).await?;
        ensure!(fleet.to_string().contains("enrolled-1"), "the enrolled agent's id is its token's: {fleet}");

        // The same token again (new state directory): refused.
        let mut again = start_agent(&agent_yaml(&url, &tok, &fp, &state("a2"), "enrolled"))?;
        let logs = wait_exit(&mut again).await?;
        ensure!(logs.contains("already used"), "reused token:\n{logs}");

        // An expired token.
        let (short, _) = token(&admin, "enrolled-2", 1).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut late = start_agent(&agent_yaml(&url, &short, &fp, &state("a3"), "enrolled"))?;
        let logs = wait_exit(&mut late).await?;
        ensure!(logs.contains("expired"), "expired token:\n{logs}");

        // A wrong fingerprint: the agent refuses, the token stays unused.
        let (t4, _) = token(&admin, "enrolled-4", 600).await?;
        let wrong = "ab".repeat(32);
        let mut pinned = start_agent(&agent_yaml(&url, &t4, &wrong, &state("a4"), "enrolled"))?;
        let logs = wait_exit(&mut pinned).await?;
        ensure!(logs.contains("refusing to enroll") && logs.contains(&wrong), "wrong fingerprint:\n{logs}");
        // ...so it still enrolls with the right fingerprint.
        let mut a4 = start_agent(&agent_yaml(&url, &t4, &fp, &state("a4"), "enrolled"))?;
        wait_until("the agent to enroll with the unused token", STEP, || async {
            Ok(a4.logs().contains("enrolled: certificate stored").then_some(()))
        })
        .await?;
        a4.stop(Duration::from_secs(20));

        // Restart: the stored certificate is used, no token needed.
        a1.stop(Duration::from_secs(20));
        let restarted = agent_yaml(&url, "", &fp, &state("a1"), "enrolled");
        let mut a1 = start_agent(&restarted)?;
        wait_until("the restarted agent to use its stored certificate", STEP, || async {
            Ok(a1.logs().contains("using the enrolled certificate").then_some(()))
        })
        .await?;
        let job = admin.create_job("enrolled").await?;
        admin.wait_completed(&job, STEP).await?;

        // Revoked: its next session is refused.
        admin.call(&format!("{FLEET}/RevokeAgent"), json!({"agent_id": "enrolled-1"})).await?;
        a1.stop(Duration::from_secs(20));
        let mut a1 = start_agent(&restarted)?;
        wait_until("the revoked agent's session to be refused", STEP, || async {
            Ok(a1.logs().contains("is revoked").then_some(()))
        })
        .await?;
        ensure!(cp.logs().contains("session refused: the agent is revoked"), "{}", cp.logs());
        ensure!(a1.is_running(), "a refused session is retried, not fatal");
        Ok(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}\ncontrol plane:\n{}", cp.logs());
    }
}
