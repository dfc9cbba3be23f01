//! A network namespace whose only link is a veth pair to the host, and a
//! real HTTP CONNECT proxy (tinyproxy, from Debian) on the host's end of it.
//!
//! [`NetNs::create`] makes namespace `ferry-test-<n>` with `lo` and one veth
//! end `10.213.<n>.2/30`; the host end is `10.213.<n>.1/30`. There is no
//! default route, so a process inside reaches only the host's veth address:
//! nothing the host serves on 127.0.0.1 (the control plane) is reachable
//! from inside, and whatever listens on the host's veth address (the proxy)
//! is. `<n>` is a /30 no interface of the host uses yet. Dropping the value
//! deletes the namespace (and with it the veth pair). Needs root (the tests
//! run as root; CI does too).
//!
//! [`Tinyproxy::start`] runs `tinyproxy -d` with Basic credentials, listening
//! on one address; [`Tinyproxy::log`] shows the CONNECT lines it logged.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A network namespace linked to the host by one veth pair.
pub struct NetNs {
    pub name: String,
    /// The host's end of the veth pair (reachable from inside).
    pub host_ip: String,
    /// The namespace's end.
    pub ns_ip: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl NetNs {
    pub fn create() -> anyhow::Result<NetNs> {
        let used = Command::new("ip").args(["-o", "-4", "addr", "show"]).output().context("run ip addr")?;
        let used = String::from_utf8_lossy(&used.stdout).into_owned();
        // Start at a pid-dependent slot so parallel test binaries rarely collide;
        // `ip link add` refuses a name that exists, which covers the rest.
        let start = std::process::id() as usize % 200;
        for i in 0..200 {
            let n = 1 + (start + i) % 200;
            if used.contains(&format!("10.213.{n}.")) {
                continue;
            }
            let (name, host_if, ns_if) = (format!("ferry-test-{n}"), format!("fyh{n}"), format!("fyn{n}"));
            if ip(&["netns", "add", &name]).is_err() {
                continue;
            }
            let ns = NetNs {
                name: name.clone(),
                host_ip: format!("10.213.{n}.1"),
                ns_ip: format!("10.213.{n}.2"),
            };
            if ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]).is_err() {
                continue; // drop deletes the namespace
            }
            let host_cidr = format!("{}/30", ns.host_ip);
            let ns_cidr = format!("{}/30", ns.ns_ip);
            let steps: [&[&str]; 6] = [
                &["link", "set", &ns_if, "netns", &name],
                &["addr", "add", &host_cidr, "dev", &host_if],
                &["link", "set", &host_if, "up"],
                &["-n", &name, "addr", "add", &ns_cidr, "dev", &ns_if],
                &["-n", &name, "link", "set", &ns_if, "up"],
                &["-n", &name, "link", "set", "lo", "up"],
            ];
            for step in steps {
                if let Err(e) = ip(step) {
                    let _ = ip(&["link", "del", &host_if]);
                    return Err(e.context("set up the test network namespace (needs root)"));
                }
            }
            return Ok(ns);
        }
        bail!("no free 10.213.<n>.0/30 for a test network namespace")
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name].iter().map(|s| s.to_string()).collect()
    }

    /// Whether a TCP connection from inside the namespace to `host:port`
    /// succeeds within 2 s (bash's /dev/tcp).
    pub fn can_connect(&self, host: &str, port: u16) -> anyhow::Result<bool> {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.name, "timeout", "2", "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{host}/{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("run a probe inside the namespace")?;
        Ok(status.success())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A tinyproxy process (HTTP CONNECT proxy) with Basic credentials.
pub struct Tinyproxy {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub addr: String,
}

impl Tinyproxy {
    /// Starts tinyproxy on `listen_ip:<free port>` requiring
    /// `user`/`password`; waits until it accepts connections.
    pub fn start(listen_ip: &str, user: &str, password: &str) -> anyhow::Result<Tinyproxy> {
        let bin = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .context("tinyproxy not found: run bash deploy/install-deps.sh")?;
        let dir = tempfile::Builder::new().prefix("ferry-tinyproxy-").tempdir()?;
        let port = crate::process::free_port()?;
        let log = dir.path().join("tinyproxy.log");
        // No ConnectPort line: CONNECT to any port (the control plane's is random).
        let conf = format!(
            "Port {port}\nListen {listen_ip}\nTimeout 120\nMaxClients 50\nLogLevel Connect\nLogFile \"{}\"\n\
             BasicAuth {user} {password}\nDisableViaHeader Yes\n",
            log.display()
        );
        let conf_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf)?;
        let out = std::fs::File::create(dir.path().join("stdout.log"))?;
        let child = Command::new(bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start tinyproxy")?;
        let mut proxy = Tinyproxy { child: Some(child), dir, addr: format!("{listen_ip}:{port}") };
        let deadline = Instant::now() + Duration::from_secs(10);
        let sock: std::net::SocketAddr = proxy.addr.parse()?;
        while std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("tinyproxy did not listen on {}: {}", proxy.addr, proxy.log());
            }
            if let Some(Ok(Some(status))) = proxy.child.as_mut().map(Child::try_wait) {
                bail!("tinyproxy exited ({status}): {}", proxy.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(proxy)
    }

    /// Its log (CONNECT requests, refusals) and output.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("tinyproxy.log"))
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("===== tinyproxy =====\n{}", self.log());
        }
    }
}
