//! An agent whose only way out is an HTTP CONNECT proxy syncs a table.
//!
//! The agent runs in a network namespace the test creates (`netns.rs`):
//! one veth link to the host and no route anywhere else, so the control
//! plane (on the host's 127.0.0.1) is unreachable directly — the test checks
//! that first. tinyproxy from Debian listens on the host end of the link and
//! requires Basic credentials; the agent gets the proxy from `HTTPS_PROXY`
//! and reaches PostgreSQL over its unix socket (the database is "next to
//! the agent"). mTLS runs end to end through the tunnel: the proxy logs
//! only the CONNECT. An agent with wrong proxy credentials never registers
//! and says why.

use anyhow::ensure;
use serde_json::json;

use ferry_tests::netns::{NetNs, Tinyproxy};
use ferry_tests::process::{json_i64, wait_until, Agent};
use ferry_tests::scenario::{Admin, World, STEP};

const ROWS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_syncs_through_a_connect_proxy_with_direct_egress_blocked() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.load_items("shop", ROWS).await.expect("load rows");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let ns = NetNs::create().expect("network namespace (needs root and iproute2)");
    let proxy = Tinyproxy::start(&ns.host_ip, "ferry", "s3cret").expect("tinyproxy");

    let result = async {
        let cp_port: u16 = cp.agents_url().rsplit(':').next().unwrap_or_default().parse()?;
        // The premise: from inside, the control plane is out of reach and the proxy is not.
        ensure!(!ns.can_connect("127.0.0.1", cp_port)?, "the namespace reaches the control plane directly");
        let (proxy_ip, proxy_port) = proxy.addr.split_once(':').unwrap();
        ensure!(ns.can_connect(proxy_ip, proxy_port.parse()?)?, "the namespace cannot reach the proxy");

        admin.put_connector("shop", "shop").await?;
        admin.put_connector("wrong-password", "wrong-password").await?;

        let mut bad = world.agent_config(&cp.agents_url(), "agent-bad-proxy-login", "wrong-password")?;
        bad.env.push(("HTTPS_PROXY".into(), format!("http://ferry:nope@{}", proxy.addr)));
        let bad = Agent::start_via(&ns.exec_prefix(), bad)?;

        let mut cfg = world.agent_config(&cp.agents_url(), "agent-behind-proxy", "shop")?;
        cfg.env.push(("HTTPS_PROXY".into(), format!("http://ferry:s3cret@{}", proxy.addr)));
        // NO_PROXY that does not match the control plane changes nothing.
        cfg.env.push(("NO_PROXY".into(), "example.com".into()));
        let agent = Agent::start_via(&ns.exec_prefix(), cfg)?;

        let mut values = world.pg_values("shop");
        // PostgreSQL over its unix socket: the namespace has no TCP route to it either.
        values["host"] = json!(world.pg.socket_dir().display().to_string());
        admin.configure("shop", values).await?;
        let job = admin.create_job("shop").await?;
        let job = admin.wait_completed(&job, STEP).await?;
        ensure!(json_i64(&job["indexedDocumentCount"]) == ROWS as i64, "{job}");
        let count = world.es.count("shop").await?;
        ensure!(count == ROWS, "shop/_count is {count}, expected {ROWS}");

        let log = proxy.log();
        ensure!(log.contains(&format!("CONNECT 127.0.0.1:{cp_port}")), "the proxy saw no CONNECT:\n{log}");
        ensure!(agent.logs().contains("through an HTTP CONNECT proxy"), "{}", agent.logs());

        wait_until("the agent with wrong proxy credentials to say why", STEP, || async {
            Ok(bad.logs().contains("requires authentication").then_some(()))
        })
        .await?;
        let c = admin.connector("wrong-password").await?;
        ensure!(c["status"] == "CONNECTOR_STATUS_CREATED", "an agent without a tunnel registered: {c}");
        Ok(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}\n===== proxy =====\n{}", proxy.log());
    }
}
