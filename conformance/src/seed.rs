//! Source adapters: how the suite puts its test rows into the agent's source.
//!
//! The contract (see sdk/PROTOCOL.md, "Conformance"): an adapter creates a source holding
//! exactly `rows` rows (ids 1..=rows, about 1 KiB each) and says
//! - the `service_type` the agent serves,
//! - `configuration`: connector configuration values that read those rows,
//! - `broken_configuration`: values for a source that cannot be reached (wrong password,
//!   missing file), which the agent must report as a clean error.
//!
//! Built in: `postgresql` (starts a throwaway PostgreSQL cluster, table `public.items`).
//! Anything else: `--seed-cmd '<command line>'`, run with `sh -c` and the environment
//! `FERRY_CONFORMANCE_ROWS=<rows>` and `FERRY_CONFORMANCE_DIR=<scratch directory>`; it prints
//! one JSON object `{"service_type", "configuration", "broken_configuration"}` as its last line
//! of stdout.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use ferry_tests::postgres::PgCluster;

/// A seeded source; keeps whatever server it needs alive.
pub struct Seeded {
    pub service_type: String,
    pub configuration: Map<String, Value>,
    pub broken_configuration: Map<String, Value>,
    _pg: Option<PgCluster>,
}

pub async fn postgresql(rows: u64) -> anyhow::Result<Seeded> {
    let pg = PgCluster::start().context("start PostgreSQL")?;
    pg.create_database("conformance").await?;
    pg.execute(
        "conformance",
        &format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, payload text NOT NULL);
             INSERT INTO items SELECT g, 'item ' || g, repeat(lpad(g::text, 8, '0'), 128)
             FROM generate_series(1, {rows}) g;"
        ),
    )
    .await?;
    let configuration = json!({
        "host": pg.host(), "port": pg.port(), "username": pg.superuser(), "password": pg.password(),
        "database": "conformance", "schema": "public", "tables": "items"
    });
    let mut broken = configuration.clone();
    broken["password"] = json!("not-the-password");
    Ok(Seeded {
        service_type: "postgresql".into(),
        configuration: object(configuration)?,
        broken_configuration: object(broken)?,
        _pg: Some(pg),
    })
}

pub fn command(cmd: &str, rows: u64, dir: &Path) -> anyhow::Result<Seeded> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("FERRY_CONFORMANCE_ROWS", rows.to_string())
        .env("FERRY_CONFORMANCE_DIR", dir)
        .output()
        .with_context(|| format!("run the seed command {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the seed command {cmd:?} failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let v: Value = serde_json::from_str(line)
        .with_context(|| format!("the seed command's last line is not JSON: {line:?}"))?;
    let service_type = v["service_type"].as_str().context("the seed output has no service_type")?.to_owned();
    Ok(Seeded {
        service_type,
        configuration: object(v["configuration"].clone())?,
        broken_configuration: object(v["broken_configuration"].clone())?,
        _pg: None,
    })
}

fn object(v: Value) -> anyhow::Result<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        other => bail!("expected a JSON object of configuration values, got {other}"),
    }
}
