//! osmem-server: an in-memory OpenSearch-compatible server speaking the Elasticsearch REST API
//! (installed with `pip install osmem-server`), one throwaway instance per test.
//!
//! - The binary is `$OSMEM_SERVER_BIN`, else the one bundled in the Python package (found by
//!   asking `python3` where `osmem_server` lives).
//! - It listens on a port it picks itself (`-addr 127.0.0.1:0`, so no race with other tests) and
//!   prints `{"url": ...}` as its first stdout line; [`Osmem::start`] reads that, then waits for
//!   `GET /` to answer. `-parent-pid` makes it exit if the test process dies without dropping it.
//! - Dropping an [`Osmem`] kills the server.
//!
//! What osmem answers that tests may rely on: `GET /` reports `distribution: "opensearch"`,
//! `number: "3.8.0"`; writes are visible to `_count`/`_search` without a refresh (refresh is
//! accepted, and is a no-op in effect); it is slow (~2k docs/s), so keep tests to thousands of docs.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

/// A running osmem-server, killed on drop.
pub struct Osmem {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Osmem {
    /// Starts a fresh, empty server and waits until it answers `GET /`.
    pub fn start() -> anyhow::Result<Osmem> {
        let bin = binary()?;
        let mut child = Command::new(&bin)
            .args(["-addr", "127.0.0.1:0", "-no-stdin-watch", "-no-ja"])
            .arg("-parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start osmem-server {}", bin.display()))?;
        let stdout = child.stdout.take().context("osmem-server stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        let read = reader.read_line(&mut first);
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let url = match read {
            Ok(n) if n > 0 => {
                let v: Value = serde_json::from_str(first.trim())
                    .with_context(|| format!("osmem-server's first line is not JSON: {first:?}"))?;
                v["url"].as_str().context("osmem-server's first line has no url")?.to_string()
            }
            _ => {
                let status = child.wait().ok();
                bail!("osmem-server {} exited before announcing its address ({status:?})", bin.display());
            }
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let osmem = Osmem { child, url, http };
        osmem.wait_ready(Duration::from_secs(20))?;
        Ok(osmem)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET /` with a plain blocking socket (works inside or outside a tokio runtime).
    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let addr = self.url.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = (|| -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect(&addr)?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(
                    format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
                )?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            })();
            match attempt {
                Ok(text) if text.starts_with("HTTP/1.1 200") => return Ok(()),
                other if Instant::now() > deadline => {
                    bail!("osmem-server at {} never answered GET /: {other:?}", self.url)
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req =
            self.http.request(method.clone(), format!("{}/{}", self.url, path.trim_start_matches('/')));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| format!("{method} {path} on osmem"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? };
        Ok((status, value))
    }

    async fn call_ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} on osmem answered {status}: {value}");
        }
        Ok(value)
    }

    /// `_count` of an index (after a refresh, so every acknowledged write counts).
    pub async fn count(&self, index: &str) -> anyhow::Result<u64> {
        self.refresh(index).await?;
        let v = self.call_ok(reqwest::Method::GET, &format!("{index}/_count"), None).await?;
        v["count"].as_u64().context("_count without count")
    }

    /// `POST {index}/_refresh`.
    pub async fn refresh(&self, index: &str) -> anyhow::Result<()> {
        self.call_ok(reqwest::Method::POST, &format!("{index}/_refresh"), None).await?;
        Ok(())
    }

    /// `POST {index}/_search` with a full body; returns the whole answer.
    pub async fn search(&self, index: &str, body: &Value) -> anyhow::Result<Value> {
        self.call_ok(reqwest::Method::POST, &format!("{index}/_search"), Some(body)).await
    }

    /// `GET {index}/_doc/{id}`: the `_source`, or `None` if there is no such document.
    pub async fn get_doc(&self, index: &str, id: &str) -> anyhow::Result<Option<Value>> {
        let (status, v) = self.call(reqwest::Method::GET, &format!("{index}/_doc/{id}"), None).await?;
        match status {
            200 => Ok(Some(v["_source"].clone())),
            404 if v["found"] == Value::Bool(false) => Ok(None),
            _ => bail!("GET {index}/_doc/{id} on osmem answered {status}: {v}"),
        }
    }

    /// Any request, for setup (`PUT index` with mappings, ...). Fails on non-2xx.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.call_ok(method, path, body).await
    }
}

impl Drop for Osmem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$OSMEM_SERVER_BIN`, else `<osmem_server package>/bin/osmem-server`.
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("OSMEM_SERVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let out = Command::new("python3")
        .args(["-c", "import osmem_server, os; print(os.path.dirname(osmem_server.__file__))"])
        .output()
        .context("run python3 to locate osmem_server (or set OSMEM_SERVER_BIN)")?;
    if !out.status.success() {
        bail!(
            "osmem-server not found: `pip install osmem-server` or set OSMEM_SERVER_BIN ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let bin = dir.join("bin").join("osmem-server");
    if !bin.is_file() {
        bail!("{} does not exist: reinstall osmem-server or set OSMEM_SERVER_BIN", bin.display());
    }
    Ok(bin)
}
