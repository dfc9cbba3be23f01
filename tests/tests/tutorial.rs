//! The PostgreSQL connector tutorial, walked end to end the way a user does
//! it: the real `ferry-control-plane` and `ferry-agent` binaries, a real
//! PostgreSQL cluster, osmem-server standing in for Elasticsearch, mTLS
//! between agent and control plane, and grpcurl on the admin API.
//!
//! 1. control plane pointed at Elasticsearch;
//! 2. PutConnector `my-connector-id` (index `music`);
//! 3. an agent (CN `agent-1`) serving that connector registers: the
//!    connector shows the PostgreSQL configuration schema, a fresh
//!    `last_seen` and status needs_configuration;
//! 4. UpdateConfiguration (a missing required value is InvalidArgument
//!    naming the field) → configured → connected; the password is redacted;
//! 5. CreateSyncJob full;
//! 6. ListSyncJobs size 1: pending → in_progress → completed with 622
//!    indexed documents (275 artists + 347 albums), and `music/_count` = 622;
//! 7. rows deleted and changed in PostgreSQL; another full sync deletes the
//!    vanished documents and updates the changed ones.
//!
//! Needs `cargo build --workspace` first (the binaries) and
//! `bash deploy/install-deps.sh` (PostgreSQL, osmem-server, grpcurl).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

use ferry_tests::certs::TestPki;
use ferry_tests::osmem::Osmem;
use ferry_tests::postgres::PgCluster;
use ferry_tests::process::{
    json_i64, wait_until, Agent, AgentConfig, ClientTls, ControlPlane, ControlPlaneConfig, Grpcurl, ServerTls,
};

const CONNECTOR: &str = "my-connector-id";
const INDEX: &str = "music";
const CATALOG_SQL: &str = include_str!("../../deploy/demo/catalog.sql");

const CONNECTORS: &str = "ferry.v1.ConnectorService";
const SYNC_JOBS: &str = "ferry.v1.SyncJobService";

/// Generous: two cores shared with other tests.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_tutorial_end_to_end() {
    let world = World::start().await.expect("start PostgreSQL, osmem-server and the control plane");
    if let Err(e) = walk_tutorial(&world).await {
        // Unwinding drops `world`: the binaries' logs are printed then.
        panic!("tutorial failed: {e:?}");
    }
}

/// Everything the tutorial runs against.
struct World {
    pg: PgCluster,
    es: Osmem,
    pki: TestPki,
    cp: ControlPlane,
    agent: tokio::sync::Mutex<Option<Agent>>,
    grpc: Grpcurl,
}

impl World {
    async fn start() -> anyhow::Result<World> {
        let grpc = Grpcurl::find()?;
        let pg = PgCluster::start()?;
        pg.create_database("chinook").await?;
        pg.execute("chinook", CATALOG_SQL).await.context("load deploy/demo/catalog.sql")?;
        let es = Osmem::start()?;
        let pki = TestPki::new()?;
        let server = pki.write_server_cert()?;
        let tls = ServerTls { cert: server.cert, key: server.key, client_ca: pki.write_ca()? };
        let cp = ControlPlane::start(ControlPlaneConfig::new(es.url(), tls)?)?;
        Ok(World { pg, es, pki, cp, agent: tokio::sync::Mutex::new(None), grpc })
    }

    async fn call(&self, method: &str, request: Value) -> anyhow::Result<Value> {
        self.grpc.call(&self.cp.admin_addr(), method, &request).await
    }

    async fn get_connector(&self, id: &str) -> anyhow::Result<Value> {
        let resp = self.call(&format!("{CONNECTORS}/GetConnector"), json!({ "connector_id": id })).await?;
        Ok(resp["connector"].clone())
    }

    /// Creates a full sync job and follows it with `ListSyncJobs size 1`
    /// until it finishes; returns the finished job and every status seen.
    async fn full_sync(&self) -> anyhow::Result<(Value, BTreeSet<String>)> {
        let created = self
            .call(
                &format!("{SYNC_JOBS}/CreateSyncJob"),
                json!({ "connector_id": CONNECTOR, "job_type": "JOB_TYPE_FULL" }),
            )
            .await?;
        let job = &created["syncJob"];
        let job_id = job["id"].as_str().context("CreateSyncJob returned no syncJob.id")?.to_owned();
        ensure!(!job_id.is_empty(), "empty job id: {created}");
        ensure!(job["jobType"] == "JOB_TYPE_FULL", "job type: {job}");
        ensure!(job["connectorId"] == CONNECTOR, "connector id: {job}");
        let seen = std::cell::RefCell::new(BTreeSet::from([status_of(job)]));
        let finished = wait_until("the sync job to finish", STEP_TIMEOUT, || {
            let seen = &seen;
            let job_id = job_id.clone();
            async move {
                let list = self
                    .call(
                        &format!("{SYNC_JOBS}/ListSyncJobs"),
                        json!({ "connector_id": CONNECTOR, "size": 1 }),
                    )
                    .await?;
                let jobs = list["syncJobs"].as_array().context("ListSyncJobs without syncJobs")?;
                ensure!(jobs.len() == 1, "ListSyncJobs size 1 returned {} jobs: {list}", jobs.len());
                let newest = &jobs[0];
                ensure!(newest["id"] == job_id.as_str(), "newest job is not the one just created: {newest}");
                let status = status_of(newest);
                seen.borrow_mut().insert(status.clone());
                match status.as_str() {
                    "SYNC_STATUS_COMPLETED" => Ok(Some(newest.clone())),
                    "SYNC_STATUS_PENDING" | "SYNC_STATUS_IN_PROGRESS" => Ok(None),
                    other => bail!("sync job ended {other}: {newest}"),
                }
            }
        })
        .await?;
        let seen = seen.into_inner();
        let allowed: BTreeSet<String> =
            ["SYNC_STATUS_PENDING", "SYNC_STATUS_IN_PROGRESS", "SYNC_STATUS_COMPLETED"]
                .into_iter()
                .map(String::from)
                .collect();
        ensure!(seen.is_subset(&allowed), "unexpected job statuses: {seen:?}");
        // GetSyncJob agrees with the list.
        let got = self.call(&format!("{SYNC_JOBS}/GetSyncJob"), json!({ "sync_job_id": job_id })).await?;
        ensure!(status_of(&got["syncJob"]) == "SYNC_STATUS_COMPLETED", "GetSyncJob: {got}");
        Ok((finished, seen))
    }
}

async fn walk_tutorial(w: &World) -> anyhow::Result<()> {
    // 2. The connector, before any agent serves it.
    let put = w
        .call(
            &format!("{CONNECTORS}/PutConnector"),
            json!({ "connector_id": CONNECTOR, "name": "Music catalog", "index_name": INDEX, "service_type": "postgresql" }),
        )
        .await?;
    ensure!(put["result"] == "created", "PutConnector result: {put}");
    let c = &put["connector"];
    ensure!(c["id"] == CONNECTOR && c["name"] == "Music catalog" && c["indexName"] == INDEX, "{c}");
    ensure!(c["status"] == "CONNECTOR_STATUS_CREATED", "new connector status: {c}");

    // Unknown ids are NotFound.
    let err = w
        .grpc
        .call_err(
            &w.cp.admin_addr(),
            &format!("{CONNECTORS}/GetConnector"),
            &json!({ "connector_id": "no-such-connector" }),
        )
        .await?;
    ensure!(err.code == "NotFound", "GetConnector of an unknown id: {err:?}");

    // 3. The agent dials out over mTLS and registers.
    let before_agent = unix_now() - 2.0;
    let agent_cert = w.pki.write_client_cert("agent-1")?;
    let tls = ClientTls { ca: w.pki.write_ca()?, cert: agent_cert.cert, key: agent_cert.key };
    let agent = Agent::start(AgentConfig::new(&w.cp.agents_url(), tls).connector(CONNECTOR, "postgresql"))?;
    *w.agent.lock().await = Some(agent);

    let c = wait_until("status NEEDS_CONFIGURATION after the agent registered", STEP_TIMEOUT, || async {
        let c = w.get_connector(CONNECTOR).await?;
        Ok((c["status"] == "CONNECTOR_STATUS_NEEDS_CONFIGURATION").then_some(c))
    })
    .await?;
    let config = c["configuration"].as_object().context("connector without configuration")?;
    for key in ["host", "port", "username", "password", "database", "schema", "tables"] {
        ensure!(config.contains_key(key), "configuration schema lacks `{key}`: {}", c["configuration"]);
        ensure!(
            config[key]["label"].as_str().is_some_and(|l| !l.is_empty()),
            "`{key}` has no label: {}",
            config[key]
        );
    }
    ensure!(config["password"]["sensitive"] == true, "password not sensitive: {}", config["password"]);
    ensure!(config["host"]["required"] == true, "host not required: {}", config["host"]);
    let last_seen = c["lastSeen"].as_str().context("no lastSeen after registration")?;
    let last_seen_t = rfc3339_to_unix(last_seen).with_context(|| format!("parse lastSeen {last_seen}"))?;
    ensure!(
        last_seen_t >= before_agent && last_seen_t <= unix_now() + 2.0,
        "lastSeen {last_seen} is not fresh (agent started at {before_agent})"
    );

    // 4. Configuration. A required value missing: InvalidArgument naming it.
    let values = json!({
        "host": w.pg.host(),
        "port": w.pg.port(),
        "username": w.pg.superuser(),
        "password": w.pg.password(),
        "database": "chinook",
        "schema": "public",
        "tables": "album,artist",
    });
    let mut without_host = values.clone();
    without_host.as_object_mut().expect("object").remove("host");
    let err = w
        .grpc
        .call_err(
            &w.cp.admin_addr(),
            &format!("{CONNECTORS}/UpdateConfiguration"),
            &json!({ "connector_id": CONNECTOR, "values": without_host }),
        )
        .await?;
    ensure!(err.code == "InvalidArgument", "UpdateConfiguration without host: {err:?}");
    ensure!(err.message.contains("host"), "the error does not name the missing field: {err:?}");

    let updated = w
        .call(
            &format!("{CONNECTORS}/UpdateConfiguration"),
            json!({ "connector_id": CONNECTOR, "values": values }),
        )
        .await?;
    let status = &updated["connector"]["status"];
    ensure!(
        status == "CONNECTOR_STATUS_CONFIGURED" || status == "CONNECTOR_STATUS_CONNECTED",
        "status after UpdateConfiguration: {updated}"
    );
    ensure!(
        updated["connector"]["configuration"]["password"]["value"] == "**********",
        "password not redacted in UpdateConfiguration's answer: {}",
        updated["connector"]["configuration"]["password"]
    );
    let c =
        wait_until("status CONNECTED after the agent validated the configuration", STEP_TIMEOUT, || async {
            let c = w.get_connector(CONNECTOR).await?;
            if c["status"] == "CONNECTOR_STATUS_ERROR" {
                bail!("connector went to error: {}", c["error"]);
            }
            Ok((c["status"] == "CONNECTOR_STATUS_CONNECTED").then_some(c))
        })
        .await?;
    let cfg = &c["configuration"];
    ensure!(cfg["password"]["value"] == "**********", "password not redacted: {}", cfg["password"]);
    ensure!(cfg["host"]["value"] == w.pg.host(), "host value: {}", cfg["host"]);
    ensure!(cfg["tables"]["value"] == "album,artist", "tables value: {}", cfg["tables"]);

    // 5 + 6. The first full sync.
    let (job, seen) = w.full_sync().await?;
    eprintln!("first sync: statuses seen {seen:?}; job {job}");
    ensure!(json_i64(&job["indexedDocumentCount"]) == 622, "indexed documents: {job}");
    ensure!(json_i64(&job["deletedDocumentCount"]) == 0, "deleted documents: {job}");
    ensure!(job["workerHostname"] == "agent-1", "worker: {job}");
    ensure!(w.es.count(INDEX).await? == 622, "music/_count after the first sync");
    let artist = w.es.get_doc(INDEX, "chinook_public_artist_1").await?.context("artist 1 not indexed")?;
    ensure!(artist["public_artist_name"] == "Velvet Hearts", "artist 1: {artist}");
    let album = w.es.get_doc(INDEX, "chinook_public_album_10").await?.context("album 10 not indexed")?;
    ensure!(album["public_album_title"] == "Secret Hits", "album 10: {album}");

    // 7. Rows vanish and change; the next full sync follows.
    w.pg.execute(
        "chinook",
        "DELETE FROM album WHERE album_id IN (1, 2, 3); \
         DELETE FROM artist WHERE artist_id IN (274, 275); \
         UPDATE album SET title = 'Secret Hits (Remastered)' WHERE album_id = 10; \
         UPDATE artist SET name = 'Velvet Hearts Revival' WHERE artist_id = 1;",
    )
    .await?;
    let (job, seen) = w.full_sync().await?;
    eprintln!("second sync: statuses seen {seen:?}; job {job}");
    ensure!(json_i64(&job["deletedDocumentCount"]) == 5, "deleted documents: {job}");
    ensure!(json_i64(&job["indexedDocumentCount"]) == 617, "indexed documents: {job}");
    ensure!(w.es.count(INDEX).await? == 617, "music/_count after the second sync");
    for gone in ["chinook_public_album_1", "chinook_public_album_3", "chinook_public_artist_275"] {
        ensure!(w.es.get_doc(INDEX, gone).await?.is_none(), "{gone} still in the index");
    }
    let album = w.es.get_doc(INDEX, "chinook_public_album_10").await?.context("album 10 vanished")?;
    ensure!(album["public_album_title"] == "Secret Hits (Remastered)", "album 10 not updated: {album}");
    let artist = w.es.get_doc(INDEX, "chinook_public_artist_1").await?.context("artist 1 vanished")?;
    ensure!(artist["public_artist_name"] == "Velvet Hearts Revival", "artist 1 not updated: {artist}");

    // The connector's bookkeeping reflects the last sync.
    let c = wait_until("the connector's last sync bookkeeping", Duration::from_secs(15), || async {
        let c = w.get_connector(CONNECTOR).await?;
        Ok((c["lastSyncStatus"] == "SYNC_STATUS_COMPLETED" && json_i64(&c["lastDeletedDocumentCount"]) == 5)
            .then_some(c))
    })
    .await?;
    ensure!(json_i64(&c["lastIndexedDocumentCount"]) == 617, "lastIndexedDocumentCount: {c}");
    ensure!(c["configuration"]["password"]["value"] == "**********", "password not redacted");
    Ok(())
}

fn status_of(job: &Value) -> String {
    job["status"].as_str().unwrap_or("<none>").to_owned()
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64()
}

/// Seconds since the epoch of a protobuf JSON timestamp
/// (`2026-01-02T03:04:05.678Z`, always UTC).
fn rfc3339_to_unix(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hh, mm) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

#[test]
fn rfc3339_parses() {
    assert_eq!(rfc3339_to_unix("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(rfc3339_to_unix("2000-03-01T00:00:01.5Z"), Some(951_868_801.5));
    assert_eq!(rfc3339_to_unix("2024-02-29T12:00:00Z"), Some(1_709_208_000.0));
    assert_eq!(rfc3339_to_unix("2024-02-29T12:00:00+01:00"), None);
}

/// The README's commands, as written, against `deploy/demo.sh`.
///
/// Runs the demo (`DEMO_KEEP_RUNNING=1`, the debug binaries already built)
/// in the background, takes its `export A=... ES=... PGPORT=...` line, and
/// runs every `sh` block of README.md from the tutorial to the end of
/// "Managing connectors" in one bash script, as a user pasting them would
/// (`set -e`: any failing command fails the test). Only the two commands
/// that start the binaries are left out (the demo runs them). Where a user
/// waits (the sync to finish, the agent to check a draft, a cancel to land)
/// the script waits too; drafts must become `valid`. Then the demo is
/// stopped by its pid: it must exit within 20 s, its processes must be gone
/// and PostgreSQL's data removed, and its output has no "could not change
/// directory" noise.
#[test]
fn readme_commands_run_against_the_demo() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let root = ferry_tests::process::workspace_root();
    let grpc = Grpcurl::find().expect("grpcurl");
    let grpc_dir = grpc.bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", grpc_dir.display(), std::env::var("PATH").unwrap_or_default());
    let work = tempfile::tempdir().expect("temp dir");
    let demo_dir = work.path().join("demo");
    let mut demo = Command::new("bash")
        .arg(root.join("deploy/demo.sh"))
        .current_dir(&root)
        .env("DEMO_KEEP_RUNNING", "1")
        .env("DEMO_SKIP_BUILD", "1")
        .env("DEMO_PROFILE", "debug")
        .env("DEMO_DIR", &demo_dir)
        .env("PATH", &path)
        .env_remove("ES_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run deploy/demo.sh");
    // Both streams into one log, read on threads (the demo writes to both).
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let readers: Vec<_> = [
        Box::new(demo.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(demo.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|stream| {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    })
    .collect();
    let demo_log = || log.lock().unwrap().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let exports = loop {
        if let Some(l) = demo_log().lines().find(|l| l.starts_with("export A=")) {
            break l.to_owned();
        }
        if let Ok(Some(status)) = demo.try_wait() {
            panic!("the demo exited ({status}) before printing its export line:\n{}", demo_log());
        }
        assert!(std::time::Instant::now() < deadline, "no export line after 300 s:\n{}", demo_log());
        std::thread::sleep(Duration::from_millis(300));
    };
    let pgdata = std::fs::read_to_string(demo_dir.join("pgdata-path")).expect("the demo's pgdata-path");
    let pgdata = std::path::PathBuf::from(pgdata.trim());
    assert!(pgdata.is_dir(), "PostgreSQL data {} missing while the demo runs", pgdata.display());
    let pids: Vec<u32> = std::fs::read_to_string(demo_dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();

    let script = readme_script(&std::fs::read_to_string(root.join("README.md")).unwrap(), &exports);
    let script_path = work.path().join("readme.sh");
    std::fs::write(&script_path, &script).unwrap();
    let out = Command::new("bash")
        .arg(&script_path)
        .current_dir(work.path())
        .env("PATH", &path)
        .stdin(Stdio::null())
        .output()
        .expect("run the README's commands");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();

    // Stop the demo by its pid, as a user who backgrounded it would.
    let _ = Command::new("kill").arg(demo.id().to_string()).status();
    let stop_deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exited = loop {
        if let Ok(Some(_)) = demo.try_wait() {
            break true;
        }
        if std::time::Instant::now() > stop_deadline {
            let _ = demo.kill();
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in readers {
        let _ = r.join();
    }
    let demo_out = demo_log();
    assert!(
        out.status.success(),
        "a README command failed ({}):\n--- script ---\n{script}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- demo ---\n{demo_out}",
        out.status
    );
    assert!(exited, "the demo did not stop within 20 s of `kill PID`:\n{demo_out}");
    std::thread::sleep(Duration::from_secs(1));
    for pid in pids {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ");
        assert!(!alive, "process {pid} the demo started still runs after it stopped");
    }
    assert!(!pgdata.exists(), "the demo left PostgreSQL's data at {}", pgdata.display());
    assert!(!demo_out.contains("could not change directory"), "{demo_out}");
    // What the tutorial promises.
    let count_line = stdout.lines().find(|l| l.contains("\"_shards\"")).unwrap_or_default();
    assert!(count_line.replace(' ', "").contains("\"count\":622"), "music/_count: {count_line}\n{stdout}");
    assert!(stdout.contains("SYNC_STATUS_COMPLETED"), "{stdout}");
    assert!(stdout.contains("\"demo-agent\""), "the binding of the demo's agent: {stdout}");
}

/// The bash script of the README's `sh` blocks from "## Tutorial" to
/// "## Configuration", with the waits a user does between them.
fn readme_script(readme: &str, exports: &str) -> String {
    let start = readme.find("## Tutorial").expect("README has a Tutorial section");
    let end = readme[start..].find("## Configuration").map(|e| start + e).unwrap_or(readme.len());
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in readme[start..end].lines() {
        let t = line.trim_start();
        match (&mut current, t) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap().join("\n")),
            (Some(lines), _) => {
                if !(t.starts_with("ferry-control-plane ") || t.starts_with("ferry-agent ")) {
                    lines.push(t.to_owned());
                }
            }
            (None, _) => {}
        }
    }
    assert!(blocks.len() >= 10, "only {} sh blocks found in the README's tutorial", blocks.len());
    let mut s = format!(
        r#"set -euo pipefail
{exports}
until_ok() {{ local n=0; until eval "$1"; do n=$((n+1)); [ $n -lt 400 ] || {{ echo "timed out waiting for: $1" >&2; return 1; }}; sleep 0.3; done; }}
newest_status() {{ grpcurl -plaintext -d '{{"connector_id":"my-connector-id","size":1}}' $A ferry.v1.SyncJobService/ListSyncJobs | python3 -c 'import json,sys; print(json.load(sys.stdin)["syncJobs"][0]["status"])'; }}
job_status() {{ grpcurl -plaintext -d '{{"sync_job_id":"'$1'"}}' $A ferry.v1.SyncJobService/GetSyncJob | python3 -c 'import json,sys; print(json.load(sys.stdin)["syncJob"]["status"])'; }}
draft() {{ grpcurl -plaintext -d '{{"connector_id":"my-connector-id"}}' $A ferry.v1.ConnectorService/GetConnector | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["connector"]["filtering"][0]["draft"]["validation"]))'; }}
"#
    );
    for (i, block) in blocks.iter().enumerate() {
        if block.trim().is_empty() {
            continue;
        }
        if block.contains("SyncJobService/ListSyncJobs") {
            s.push_str("until_ok '[ \"$(newest_status)\" = SYNC_STATUS_COMPLETED ]'\n");
        }
        if block.contains("SyncJobService/DeleteSyncJob") {
            s.push_str("until_ok 'case \"$(job_status $JOB)\" in SYNC_STATUS_CANCELED|SYNC_STATUS_COMPLETED) true;; *) false;; esac'\n");
        }
        if block.contains("SyncJobService/CancelSyncJob") {
            // The demo's 622 documents may be indexed before the cancel
            // arrives: then the README's answer is FAILED_PRECONDITION
            // "already completed", and only that is accepted.
            s.push_str(&format!(
                "echo '=== README block {i}'\nif ! {{ {block}\n}} 2>cancel.err; then cat cancel.err >&2; \
                 grep -q 'is already completed; only pending or running jobs can be canceled' cancel.err; fi\necho\n"
            ));
            continue;
        }
        s.push_str(&format!("echo '=== README block {i}'\n{block}\necho\n"));
        if block.contains("ConnectorService/UpdateFiltering") {
            s.push_str(
                "until_ok '! draft | grep -q \"\\\"edited\\\"\"'\n\
                 draft | grep -q '\"valid\"' || { echo \"draft not valid: $(draft)\" >&2; exit 1; }\n",
            );
        }
    }
    s
}
