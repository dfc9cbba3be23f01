//! An agent that compresses its stream (`control_plane.compression: zstd`,
//! for slow links) syncs exactly like one that does not: every row arrives
//! once, intact, and the control plane saw a compressed stream.

use std::time::Duration;

use ferry_tests::process::{json_i64, Agent};
use ferry_tests::scenario::{Admin, World};

const CONNECTOR: &str = "zipped";
const ROWS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_compressed_stream_delivers_every_row() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.load_items(CONNECTOR, ROWS).await.expect("load rows");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    admin.put_connector(CONNECTOR, CONNECTOR).await.expect("PutConnector");
    let mut config = world.agent_config(&cp.agents_url(), "far-away", CONNECTOR).unwrap();
    config.env.push(("FERRY_CONTROL_PLANE__COMPRESSION".into(), "zstd".into()));
    let agent = Agent::start(config).expect("agent");

    admin.configure(CONNECTOR, world.pg_values(CONNECTOR)).await.expect("configure");
    let job_id = admin.create_job(CONNECTOR).await.expect("CreateSyncJob");
    let job = admin.wait_completed(&job_id, Duration::from_secs(120)).await.unwrap_or_else(|e| {
        panic!("{e:#}\n--- agent ---\n{}\n--- control plane ---\n{}", agent.logs(), cp.logs())
    });
    assert_eq!(json_i64(&job["indexedDocumentCount"]), ROWS as i64, "{job}");
    world.es.refresh(CONNECTOR).await.expect("refresh");
    assert_eq!(world.es.count(CONNECTOR).await.unwrap(), ROWS);
    let doc = world
        .es
        .get_doc(CONNECTOR, &format!("{CONNECTOR}_public_item_{ROWS}"))
        .await
        .unwrap()
        .expect("the last row's document");
    assert_eq!(doc["public_item_name"], format!("item {ROWS}"));
    assert_eq!(doc["public_item_body"].as_str().map(str::len), Some(160));
    // (The log may be coloured: compare with the escape sequences removed.)
    let plain = strip_ansi(&cp.logs());
    assert!(
        plain.lines().any(|l| l.contains("agent connected") && l.contains("compression=zstd")),
        "the control plane did not see a zstd stream:\n{}",
        cp.logs()
    );
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ending with a letter.
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
