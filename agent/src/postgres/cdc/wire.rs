//! A PostgreSQL replication connection (`replication=database`), spoken on
//! [`postgres_protocol`]'s message codecs over the agent's own TCP/TLS
//! stream.
//!
//! Why not tokio-postgres: it cannot start a walsender session nor enter
//! `CopyBoth`. Why not a replication crate: see ARCHITECTURE.md
//! ("Incremental sync"). The subset spoken here is small: startup and
//! authentication (cleartext, md5, SCRAM-SHA-256), simple queries whose
//! results are text (`CREATE_REPLICATION_SLOT`, `IDENTIFY_SYSTEM`), and the
//! `CopyBoth` stream of `START_REPLICATION` (XLogData and keepalives in,
//! standby status updates out).
//!
//! Contract: TLS follows the connector's `ssl_enabled`/`ssl_ca` exactly as
//! the query connections do ([`super::super::connect`]); every read has a
//! deadline chosen by the caller; messages over 1 GiB (PostgreSQL's own
//! limit) are refused rather than allocated.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferry_sdk::SourceError;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::postgres::config::PostgresConfig;
use crate::postgres::connect;

/// Largest backend message accepted (PostgreSQL's MaxAllocSize).
const MAX_MESSAGE: usize = 1 << 30;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An error response of the server: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// What can go wrong on the replication connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Server(ServerError),
    #[error("the replication connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the replication connection timed out waiting for PostgreSQL ({0})")]
    Timeout(&'static str),
    #[error("unexpected message from PostgreSQL: {0}")]
    Protocol(String),
    #[error("{0}")]
    Setup(SourceError),
}

impl WireError {
    /// The SQLSTATE when the server refused something.
    pub fn code(&self) -> Option<&str> {
        match self {
            WireError::Server(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// One message of the replication stream.
#[derive(Debug)]
pub enum StreamMessage {
    /// `w`: WAL data; `data` is one pgoutput message.
    XLogData { start: u64, end: u64, data: Bytes },
    /// `k`: the server's position; answer at once when `reply` is set.
    Keepalive { end: u64, reply: bool },
    /// The server ended the stream (CopyDone / CommandComplete).
    End,
}

/// A replication connection.
pub struct ReplicationConn {
    io: Box<dyn Io>,
    read: BytesMut,
    write: BytesMut,
}

/// One row of a simple query answer, every column as text (`None`: NULL).
pub type TextRow = Vec<Option<String>>;

impl ReplicationConn {
    /// Connect with `replication=database` to the configured database.
    /// `options` are startup GUCs (`-c name=value ...`): they decide how
    /// pgoutput renders values (DateStyle, TimeZone, extra_float_digits).
    pub async fn connect(cfg: &PostgresConfig, options: &str) -> Result<Self, WireError> {
        let addr = (cfg.host.as_str(), cfg.port);
        let tcp = tokio::time::timeout(cfg.connect_timeout(), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| WireError::Timeout("connect"))??;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = if cfg.ssl_enabled {
            let mut tcp = tcp;
            let mut buf = BytesMut::new();
            frontend::ssl_request(&mut buf);
            tcp.write_all(&buf).await?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await?;
            if answer[0] != b'S' {
                return Err(WireError::Setup(SourceError::Unreachable(format!(
                    "PostgreSQL at {} does not accept TLS but ssl_enabled is set: turn ssl on in the server or ssl_enabled off",
                    cfg.address()
                ))));
            }
            let mut make = connect::tls_connector(cfg).map_err(WireError::Setup)?;
            let tls = <tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<tokio::net::TcpStream>>::make_tls_connect(&mut make, &cfg.host)
                .unwrap_or_else(|e: std::convert::Infallible| match e {});
            let stream = tokio::time::timeout(cfg.connect_timeout(), tls.connect(tcp))
                .await
                .map_err(|_| WireError::Timeout("TLS handshake"))?
                .map_err(|e| {
                    WireError::Setup(SourceError::Unreachable(format!(
                        "TLS handshake with PostgreSQL at {} failed: {e}: check ssl_ca (the CA certificate that signed the server's certificate)",
                        cfg.address()
                    )))
                })?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        let mut conn =
            ReplicationConn { io, read: BytesMut::with_capacity(64 * 1024), write: BytesMut::new() };
        let params = [
            ("user", cfg.username.as_str()),
            ("database", cfg.database.as_str()),
            ("replication", "database"),
            ("application_name", "ferry-agent-cdc"),
            ("options", options),
        ];
        frontend::startup_message(params.iter().copied(), &mut conn.write)?;
        conn.flush().await?;
        let deadline = cfg.connect_timeout() + Duration::from_secs(5);
        conn.authenticate(cfg, deadline).await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, cfg: &PostgresConfig, deadline: Duration) -> Result<(), WireError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, mut body) = self.recv(deadline, "authentication").await?;
            match tag {
                b'R' => {
                    let kind = body.get_i32();
                    match kind {
                        0 => {}
                        3 => {
                            frontend::password_message(cfg.password.as_bytes(), &mut self.write)?;
                            self.flush().await?;
                        }
                        5 => {
                            let mut salt = [0u8; 4];
                            body.copy_to_slice(&mut salt);
                            let hash = postgres_protocol::authentication::md5_hash(
                                cfg.username.as_bytes(),
                                cfg.password.as_bytes(),
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut self.write)?;
                            self.flush().await?;
                        }
                        10 => {
                            let mechanisms: Vec<&[u8]> =
                                body.split(|b| *b == 0).filter(|m| !m.is_empty()).collect();
                            if !mechanisms.contains(&&b"SCRAM-SHA-256"[..]) {
                                return Err(WireError::Protocol(
                                    "the server offers no SASL mechanism this agent supports (SCRAM-SHA-256)".into(),
                                ));
                            }
                            let s = ScramSha256::new(cfg.password.as_bytes(), ChannelBinding::unsupported());
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut self.write)?;
                            self.flush().await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| WireError::Protocol("SASL continue out of order".into()))?;
                            s.update(&body)?;
                            frontend::sasl_response(s.message(), &mut self.write)?;
                            self.flush().await?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| WireError::Protocol("SASL final out of order".into()))?;
                            s.finish(&body)?;
                        }
                        k => {
                            return Err(WireError::Protocol(format!(
                                "authentication method {k} is not supported for replication connections: use scram-sha-256, md5 or password in pg_hba.conf"
                            )))
                        }
                    }
                }
                b'Z' => return Ok(()),
                b'E' => return Err(WireError::Server(parse_error(&body))),
                _ => {} // ParameterStatus, BackendKeyData, notices
            }
        }
    }

    /// Run one simple query and collect its rows (small answers only).
    pub async fn simple_query(&mut self, sql: &str, deadline: Duration) -> Result<Vec<TextRow>, WireError> {
        frontend::query(sql, &mut self.write)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, mut body) = self.recv(deadline, "a replication command").await?;
            match tag {
                b'D' => {
                    let n = body.get_i16();
                    let mut row = Vec::with_capacity(n.max(0) as usize);
                    for _ in 0..n {
                        let len = body.get_i32();
                        if len < 0 {
                            row.push(None);
                        } else {
                            let v = body.split_to(len as usize);
                            row.push(Some(String::from_utf8_lossy(&v).into_owned()));
                        }
                    }
                    rows.push(row);
                }
                b'E' => error = Some(parse_error(&body)),
                b'Z' => {
                    return match error {
                        Some(e) => Err(WireError::Server(e)),
                        None => Ok(rows),
                    }
                }
                _ => {} // RowDescription, CommandComplete, notices
            }
        }
    }

    /// Send `START_REPLICATION ...` and wait for the server to enter CopyBoth.
    pub async fn start_replication(&mut self, sql: &str, deadline: Duration) -> Result<(), WireError> {
        frontend::query(sql, &mut self.write)?;
        self.flush().await?;
        loop {
            let (tag, body) = self.recv(deadline, "START_REPLICATION").await?;
            match tag {
                b'W' => return Ok(()),
                b'E' => {
                    let e = parse_error(&body);
                    // Consume the ReadyForQuery that follows the error.
                    let _ = self.recv(Duration::from_secs(5), "ready").await;
                    return Err(WireError::Server(e));
                }
                _ => {}
            }
        }
    }

    /// Split a connection in `CopyBoth` mode into its reading and writing
    /// halves, so standby status updates go out while the reader waits on
    /// Elasticsearch (PostgreSQL ends a walsender that hears nothing for
    /// `wal_sender_timeout`).
    pub fn split(self) -> (StreamReader, StatusWriter) {
        let (r, w) = tokio::io::split(self.io);
        (StreamReader { io: r, read: self.read }, StatusWriter { io: w, write: self.write })
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        flush(&mut self.io, &mut self.write).await
    }

    async fn recv(&mut self, deadline: Duration, what: &'static str) -> Result<(u8, Bytes), WireError> {
        match recv_opt(&mut self.io, &mut self.read, deadline).await? {
            Some(m) => Ok(m),
            None => Err(WireError::Timeout(what)),
        }
    }
}

/// The reading half of a replication stream.
pub struct StreamReader {
    io: tokio::io::ReadHalf<Box<dyn Io>>,
    read: BytesMut,
}

impl StreamReader {
    /// The next stream message, or `None` when nothing arrived within
    /// `wait`. Cancel-safe: a partly received message stays buffered.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<StreamMessage>, WireError> {
        let (tag, mut body) = match recv_opt(&mut self.io, &mut self.read, wait).await? {
            None => return Ok(None),
            Some(m) => m,
        };
        match tag {
            b'd' => {
                if body.is_empty() {
                    return Err(WireError::Protocol("empty CopyData".into()));
                }
                match body.get_u8() {
                    b'w' if body.len() >= 24 => {
                        let start = body.get_u64();
                        let end = body.get_u64();
                        let _time = body.get_i64();
                        Ok(Some(StreamMessage::XLogData { start, end, data: body }))
                    }
                    b'k' if body.len() >= 17 => {
                        let end = body.get_u64();
                        let _time = body.get_i64();
                        let reply = body.get_u8() == 1;
                        Ok(Some(StreamMessage::Keepalive { end, reply }))
                    }
                    t => Err(WireError::Protocol(format!("CopyData of kind {:?}", t as char))),
                }
            }
            b'c' | b'C' => Ok(Some(StreamMessage::End)),
            b'E' => Err(WireError::Server(parse_error(&body))),
            // Notices and parameter changes: nothing to do.
            _ => Ok(Some(StreamMessage::Keepalive { end: 0, reply: false })),
        }
    }
}

/// The writing half of a replication stream.
pub struct StatusWriter {
    io: tokio::io::WriteHalf<Box<dyn Io>>,
    write: BytesMut,
}

impl StatusWriter {
    /// Standby status update: everything up to `flushed` is safe on our
    /// side (PostgreSQL stores it as the slot's `confirmed_flush_lsn` and
    /// may recycle the WAL before it); `reply` asks for a keepalive back.
    pub async fn send_status(&mut self, flushed: u64, reply: bool) -> Result<(), WireError> {
        let mut msg = BytesMut::with_capacity(34);
        msg.put_u8(b'r');
        msg.put_u64(flushed);
        msg.put_u64(flushed);
        msg.put_u64(flushed);
        msg.put_i64(pg_now_micros());
        msg.put_u8(u8::from(reply));
        frontend::CopyData::new(msg.freeze())?.write(&mut self.write);
        flush(&mut self.io, &mut self.write).await?;
        Ok(())
    }

    /// End the stream politely (CopyDone, Terminate); errors are ignored:
    /// the connection is dropped right after.
    pub async fn close(mut self) {
        frontend::copy_done(&mut self.write);
        frontend::terminate(&mut self.write);
        let _ = tokio::time::timeout(Duration::from_secs(2), flush(&mut self.io, &mut self.write)).await;
    }
}

async fn flush<W: AsyncWrite + Unpin>(io: &mut W, buf: &mut BytesMut) -> std::io::Result<()> {
    io.write_all(buf).await?;
    buf.clear();
    io.flush().await
}

/// One whole backend message within `wait`; a partially received message
/// stays buffered for the next call.
async fn recv_opt<R: AsyncRead + Unpin>(
    io: &mut R,
    read: &mut BytesMut,
    wait: Duration,
) -> Result<Option<(u8, Bytes)>, WireError> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        if read.len() >= 5 {
            let len = u32::from_be_bytes([read[1], read[2], read[3], read[4]]) as usize;
            if !(4..=MAX_MESSAGE).contains(&len) {
                return Err(WireError::Protocol(format!("message length {len}")));
            }
            if read.len() > len {
                let mut msg = read.split_to(len + 1);
                let tag = msg[0];
                msg.advance(5);
                return Ok(Some((tag, msg.freeze())));
            }
            read.reserve(len + 1 - read.len());
        } else {
            read.reserve(64 * 1024);
        }
        match tokio::time::timeout_at(until, io.read_buf(read)).await {
            Err(_) => return Ok(None),
            Ok(Ok(0)) => {
                return Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "PostgreSQL closed the replication connection",
                )))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// Microseconds since 2000-01-01 (PostgreSQL's epoch).
fn pg_now_micros() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - 946_684_800_000_000
}

/// Fields of an ErrorResponse / NoticeResponse body.
fn parse_error(body: &[u8]) -> ServerError {
    let mut e = ServerError { code: String::new(), message: String::new(), detail: None, hint: None };
    for field in body.split(|b| *b == 0) {
        let Some((&kind, value)) = field.split_first() else { continue };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            _ => {}
        }
    }
    e
}

/// `X/Y` (PostgreSQL's LSN text) → u64.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// u64 → `X/Y`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(format_lsn(0x1_0000_00AB), "1/AB");
        assert_eq!(parse_lsn(&format_lsn(123_456_789_012)), Some(123_456_789_012));
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn error_fields_are_read() {
        let body = b"SERROR\0C55000\0Mlogical decoding requires wal_level >= logical\0\0";
        let e = parse_error(body);
        assert_eq!(e.code, "55000");
        assert_eq!(e.message, "logical decoding requires wal_level >= logical");
    }
}
