//! A throwaway, real PostgreSQL cluster for tests.
//!
//! [`PgCluster::start`] runs `initdb` into a fresh temporary directory (with
//! the highest PostgreSQL version found under `/usr/lib/postgresql/*/bin`),
//! starts the server with `pg_ctl` on a free port of 127.0.0.1 and waits
//! until it accepts connections. Dropping the value stops the server
//! (`pg_ctl stop -m immediate`) and deletes the directory.
//!
//! Authentication: TCP connections use `scram-sha-256` with the superuser
//! [`PgCluster::superuser`] / [`PgCluster::password`]; the unix socket (in
//! the temporary directory) trusts everyone. `fsync` is off: the data is
//! thrown away anyway.
//!
//! `initdb` refuses to run as root, so when the tests run as root the
//! directory is handed to the `postgres` OS user and every server command is
//! run through `runuser -u postgres --`. As any other user the commands run
//! directly.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let pg = ferry_tests::postgres::PgCluster::start()?;
//! pg.create_database("shop").await?;
//! pg.execute("shop", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);").await?;
//! let client = pg.client("shop").await?;
//! # Ok(()) }
//! ```

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

const SUPERUSER: &str = "postgres";
const PASSWORD: &str = "ferry-test-password";

/// A running PostgreSQL server that lives as long as this value.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// `Some(user)` when server commands must run as that OS user (we are root).
    run_as: Option<String>,
    /// uid/gid that must own files the server reads (when we are root).
    owner: Option<(u32, u32)>,
    /// Extra `-c name=value` server settings.
    settings: Vec<(String, String)>,
}

impl PgCluster {
    /// Create and start a new cluster. Blocks until the server is ready
    /// (a few seconds); fine to call from an async test.
    pub fn start() -> anyhow::Result<PgCluster> {
        Self::start_with(&[])
    }

    /// A cluster with `wal_level = logical` (for incremental sync) and room
    /// for a few replication slots.
    pub fn start_logical() -> anyhow::Result<PgCluster> {
        Self::start_with(&[
            ("wal_level", "logical"),
            ("max_replication_slots", "10"),
            ("max_wal_senders", "10"),
        ])
    }

    /// [`Self::start`] with extra server settings (`-c name=value`).
    pub fn start_with(settings: &[(&str, &str)]) -> anyhow::Result<PgCluster> {
        let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let bin = find_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("ferry-pg-").tempdir().context("create temp dir")?;
        let am_root = std::fs::metadata(dir.path())?.uid() == 0;
        let run_as = if am_root { Some(SUPERUSER.to_owned()) } else { None };
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).context("write pwfile")?;
        let owner = if am_root { Some(os_user_ids(SUPERUSER)?) } else { None };
        if let Some((uid, gid)) = owner {
            for p in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .with_context(|| format!("chown {} to {SUPERUSER}", p.display()))?;
            }
        }
        let mut cluster = PgCluster { dir, bin, port: 0, run_as, owner, settings };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "--auth-host=scram-sha-256".as_ref(),
                "--auth-local=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;

        // A free port can be taken by someone else between probing and
        // binding: try a few times.
        let mut last_err = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("could not start PostgreSQL")))
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host to connect to over TCP: `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// Superuser name (`postgres`).
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// Password of [`Self::superuser`] for TCP connections.
    pub fn password(&self) -> &str {
        PASSWORD
    }

    /// Directory of the unix socket (trust authentication).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Key/value connection string for `db` over TCP as the superuser.
    pub fn connection_string(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} password={} dbname='{}'",
            self.host(),
            self.port,
            SUPERUSER,
            PASSWORD,
            db.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    /// `CREATE DATABASE "<name>"`.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        self.execute("postgres", &sql).await.with_context(|| format!("create database {name}"))
    }

    /// Run a batch of SQL statements (simple query protocol) in `db`.
    pub async fn execute(&self, db: &str, sql: &str) -> anyhow::Result<()> {
        let client = self.client(db).await?;
        client.batch_execute(sql).await.with_context(|| format!("execute SQL in database {db}"))?;
        Ok(())
    }

    /// A connected client to `db` as the superuser. The connection runs on a
    /// spawned tokio task (needs a tokio runtime).
    pub async fn client(&self, db: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.connection_string(db), tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connect to database {db} on port {}", self.port))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Turn on TLS with this server certificate and key (PEM), e.g. from
    /// [`crate::certs::TestPki::server_cert`]. Plain connections keep working;
    /// clients that ask for TLS get it. Takes effect immediately (reload).
    pub async fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        let cert = data.join("ferry-server.crt");
        let key = data.join("ferry-server.key");
        std::fs::write(&cert, cert_pem).context("write server certificate")?;
        std::fs::write(&key, key_pem).context("write server key")?;
        // PostgreSQL refuses a key readable by others.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = self.owner {
            for p in [&cert, &key] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
            }
        }
        // ALTER SYSTEM cannot run in a (implicit, multi-statement) transaction.
        for sql in [
            "ALTER SYSTEM SET ssl_cert_file = 'ferry-server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'ferry-server.key'",
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_reload_conf()",
        ] {
            self.execute("postgres", sql).await.context("enable ssl")?;
        }
        // The reload is asynchronous: wait until the server reports it.
        let client = self.client("postgres").await?;
        for _ in 0..100 {
            let row = client.query_one("SHOW ssl", &[]).await?;
            if row.get::<_, String>(0) == "on" {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        bail!("PostgreSQL did not turn ssl on; see {}", self.dir.path().join("server.log").display())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='{}' -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        for (k, v) in &self.settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let res = self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
            ],
        );
        if let Err(e) = res {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{e:#}\nserver log:\n{log_text}");
        }
        Ok(())
    }

    /// Run a PostgreSQL binary (as the postgres OS user when we are root).
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(self.dir.path());
        let out = cmd.output().with_context(|| format!("run {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{program} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &["stop".as_ref(), "-m".as_ref(), "immediate".as_ref(), "-D".as_ref(), data.as_os_str()],
        );
        // The TempDir removes the directory when it drops right after this.
    }
}

/// `/usr/lib/postgresql/<highest version>/bin`.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in std::fs::read_dir(root).with_context(|| format!("list {}", root.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|s| s.split('.').next()?.parse::<u32>().ok()) else {
            continue;
        };
        let bin = entry.path().join("bin");
        if bin.join("initdb").exists() && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, p)| p).with_context(|| format!("no PostgreSQL with initdb under {}", root.display()))
}

fn os_user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, user]).output().context("run id")?;
        if !out.status.success() {
            bail!("OS user {user} not found: initdb cannot run as root");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("probe a free port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_and_runs_sql() {
        let pg = PgCluster::start().unwrap();
        pg.create_database("we\"ird db").await.unwrap();
        pg.execute("we\"ird db", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (7);")
            .await
            .unwrap();
        let c = pg.client("we\"ird db").await.unwrap();
        let row = c.query_one("SELECT id FROM t", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 7);
        let dir = pg.socket_dir().to_owned();
        drop(c);
        drop(pg);
        assert!(!dir.exists());
    }
}
