//! Reaching the control plane through an HTTP CONNECT proxy.
//!
//! Agents often sit in networks whose only way out is a corporate proxy.
//! The agent opens a TCP connection to the proxy, asks it for a tunnel with
//! `CONNECT host:port HTTP/1.1` (with `Proxy-Authorization: Basic` when
//! credentials are set), and on `200` runs TLS — the same mTLS as without a
//! proxy, end to end with the control plane — and gRPC inside the tunnel.
//! The proxy sees only the target's host and port, never the traffic.
//!
//! Which proxy: `control_plane.proxy` in the agent's configuration when set;
//! otherwise `HTTPS_PROXY` (or `https_proxy`) from the environment unless
//! the control plane's host matches `NO_PROXY` (or `no_proxy`): `*`, exact
//! host names or IP addresses, and domain suffixes (`example.com` and
//! `.example.com` both match `cp.example.com`), ports ignored — the rules
//! curl follows.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

/// An HTTP proxy that tunnels with CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// `host:port` of the proxy.
    pub addr: String,
    /// Basic credentials for `Proxy-Authorization`.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("addr", &self.addr)
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl ProxySettings {
    /// Parses `http://[user:password@]host:port` (also without `http://`).
    /// User and password may be percent-encoded.
    pub fn parse(url: &str) -> Result<ProxySettings, String> {
        let url = url.trim();
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.contains("://") {
            return Err(format!(
                "proxy {:?}: only http:// proxies are supported (the tunnel itself carries TLS)",
                redact(url)
            ));
        } else {
            url
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let has_port = match hostport.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
            None => false,
        };
        if !has_port || hostport.contains('/') {
            return Err(format!("proxy {:?} must be http://host:port (the port is required)", redact(url)));
        }
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                Some((percent_decode(user)?, percent_decode(pass)?))
            }
        };
        Ok(ProxySettings { addr: hostport.to_owned(), credentials })
    }

    /// The proxy the environment asks for to reach `host`: `HTTPS_PROXY`
    /// unless `NO_PROXY` matches. Empty values count as unset.
    pub fn from_env(env: &BTreeMap<String, String>, host: &str) -> Result<Option<ProxySettings>, String> {
        let get = |upper: &str| {
            env.get(upper)
                .or_else(|| env.get(&upper.to_ascii_lowercase()))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let Some(url) = get("HTTPS_PROXY") else { return Ok(None) };
        if get("NO_PROXY").is_some_and(|list| no_proxy_matches(list, host)) {
            return Ok(None);
        }
        ProxySettings::parse(url).map(Some).map_err(|e| format!("HTTPS_PROXY: {e}"))
    }
}

/// Whether `host` is excluded from proxying by a `NO_PROXY` list.
pub fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    list.split([',', ' ']).map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        // Drop a port (`host:8080`), but not from a bare IPv6 address.
        let entry = match entry.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
            _ => entry,
        };
        let entry = entry.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let domain = entry.trim_start_matches('.');
        host == domain || host.ends_with(&format!(".{domain}"))
    })
}

/// `http://user:***@host:port` — never log a proxy password.
fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (scheme, user) = match userinfo.split_once("://") {
                Some((s, rest)) => (format!("{s}://"), rest),
                None => (String::new(), userinfo),
            };
            let user = user.split(':').next().unwrap_or("");
            format!("{scheme}{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => out.push(b),
                None => return Err("proxy credentials: a '%' must be followed by two hex digits".into()),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "proxy credentials are not UTF-8 once percent-decoded".into())
}

/// Largest proxy response head we read: a real one is a few hundred bytes.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// A `tower` connector that opens a CONNECT tunnel to the URI's authority;
/// tonic runs TLS over what it returns.
#[derive(Clone, Debug)]
pub(super) struct ProxyConnector {
    pub proxy: ProxySettings,
    pub timeout: Duration,
}

impl tonic::codegen::Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let proxy = self.proxy.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| other(format!("control plane URL {uri} has no host")))?;
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
            let target = format!("{host}:{port}");
            match tokio::time::timeout(timeout, tunnel(&proxy, &target)).await {
                Ok(r) => r.map(TokioIo::new),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("proxy {} did not open a tunnel to {target} within {timeout:?}", proxy.addr),
                )),
            }
        })
    }
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

/// Connects to the proxy and asks for a tunnel to `target` (`host:port`).
pub(super) async fn tunnel(proxy: &ProxySettings, target: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(&proxy.addr)
        .await
        .map_err(|e| other(format!("cannot reach proxy {}: {e}", proxy.addr)))?;
    stream.set_nodelay(true)?;
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, pass)) = &proxy.credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;

    // Read the response head. The control plane speaks only after our TLS
    // ClientHello, so nothing past the blank line can arrive yet.
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(other(format!(
                "proxy {} closed the connection before answering CONNECT",
                proxy.addr
            )));
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(other(format!("proxy {} sent a response head over 16 KiB", proxy.addr)));
        }
    }
    let status_line =
        String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or(&[])).trim().to_owned();
    let code = status_line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(200..=299) => Ok(stream),
        // 407 is the standard answer; tinyproxy answers 401.
        Some(401 | 407) => Err(other(format!(
            "proxy {} requires authentication ({status_line}): set control_plane.proxy.username and password \
             (or user:password@ in HTTPS_PROXY)",
            proxy.addr
        ))),
        _ => Err(other(format!(
            "proxy {} refused to tunnel to {target} ({status_line}): allow CONNECT to this host and port",
            proxy.addr
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_and_credentials_are_not_printed() {
        let p = ProxySettings::parse("http://al%40ice:p%3Ass@proxy.corp:3128/").unwrap();
        assert_eq!(p.addr, "proxy.corp:3128");
        assert_eq!(p.credentials, Some(("al@ice".into(), "p:ss".into())));
        assert!(!format!("{p:?}").contains("p:ss"));
        assert_eq!(ProxySettings::parse("10.0.0.1:8080").unwrap().credentials, None);
        let e = ProxySettings::parse("https://u:secret@p:1").unwrap_err();
        assert!(e.contains("http://") && !e.contains("secret"), "{e}");
        assert!(ProxySettings::parse("http://proxy").unwrap_err().contains("port"));
    }

    #[test]
    fn https_proxy_and_no_proxy_follow_curl() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let e = env(&[("https_proxy", "http://p:3128"), ("NO_PROXY", "localhost, .internal,10.1.2.3:50051")]);
        assert_eq!(ProxySettings::from_env(&e, "cp.example.com").unwrap().unwrap().addr, "p:3128");
        assert_eq!(ProxySettings::from_env(&e, "cp.internal").unwrap(), None);
        assert_eq!(ProxySettings::from_env(&e, "internal").unwrap(), None);
        assert_eq!(ProxySettings::from_env(&e, "10.1.2.3").unwrap(), None);
        assert_eq!(ProxySettings::from_env(&e, "LOCALHOST").unwrap(), None);
        assert!(ProxySettings::from_env(&e, "notinternal").unwrap().is_some());
        assert_eq!(ProxySettings::from_env(&env(&[("HTTPS_PROXY", "")]), "x").unwrap(), None);
        assert!(no_proxy_matches("*", "anything"));
        assert!(no_proxy_matches("::1", "[::1]"));
    }

    /// A one-shot fake proxy: answers `reply` to the first request and
    /// returns what it received.
    async fn fake_proxy(reply: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        (addr, h)
    }

    #[tokio::test]
    async fn connect_request_carries_basic_credentials_and_407_is_explained() {
        let (addr, h) = fake_proxy("HTTP/1.1 200 Connection established\r\n\r\n").await;
        let p = ProxySettings { addr, credentials: Some(("u".into(), "pw".into())) };
        tunnel(&p, "cp:50051").await.unwrap();
        let req = h.await.unwrap();
        assert!(req.starts_with("CONNECT cp:50051 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Proxy-Authorization: Basic dTpwdw==\r\n"), "{req}");

        let (addr, _h) = fake_proxy("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        let e = tunnel(&ProxySettings { addr, credentials: None }, "cp:1").await.unwrap_err().to_string();
        assert!(e.contains("requires authentication"), "{e}");
        let (addr, _h) = fake_proxy("HTTP/1.1 403 Forbidden\r\n\r\n").await;
        let e = tunnel(&ProxySettings { addr, credentials: None }, "cp:1").await.unwrap_err().to_string();
        assert!(e.contains("refused to tunnel to cp:1"), "{e}");
    }
}
