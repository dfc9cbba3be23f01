//! A TCP proxy whose link the test can cut: put it between an agent and the
//! control plane to simulate a network outage.
//!
//! While the link is up, every accepted connection is piped to `upstream`
//! byte for byte (TLS passes through untouched; the agent still talks to the
//! real server certificate). [`NetCut::cut_for`] resets every open connection
//! at once (SO_LINGER 0, so both ends see a reset, as with a broken link),
//! then for the given period accepts and immediately resets new connections
//! (the agent's reconnects fail), then heals. Counters tell the test what
//! happened.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct NetCutCounters {
    /// Connections piped to the upstream.
    pub piped: AtomicU64,
    /// Open connections reset by a cut.
    pub reset: AtomicU64,
    /// Connections refused while the link was down.
    pub refused: AtomicU64,
}

struct Inner {
    upstream: SocketAddr,
    down: AtomicBool,
    /// Bumped on every cut; pipes watching it reset their sockets.
    generation: watch::Sender<u64>,
    counters: NetCutCounters,
}

/// A running proxy; stops (and drops every connection) when dropped.
pub struct NetCut {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl NetCut {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<NetCut> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind the netcut proxy")?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            upstream,
            down: AtomicBool::new(false),
            generation: watch::channel(0).0,
            counters: NetCutCounters::default(),
        });
        let state = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if state.down.load(Ordering::SeqCst) {
                    state.counters.refused.fetch_add(1, Ordering::Relaxed);
                    reset(client);
                    continue;
                }
                tokio::spawn(pipe(state.clone(), client));
            }
        });
        Ok(NetCut { addr, inner, task })
    }

    /// The address to dial instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every open connection and refuses new ones for `period`.
    pub async fn cut_for(&self, period: Duration) {
        self.cut();
        tokio::time::sleep(period).await;
        self.heal();
    }

    /// Resets every open connection; new ones are refused until [`NetCut::heal`].
    pub fn cut(&self) {
        self.inner.down.store(true, Ordering::SeqCst);
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.inner.down.store(false, Ordering::SeqCst);
    }

    pub fn counters(&self) -> &NetCutCounters {
        &self.inner.counters
    }
}

impl Drop for NetCut {
    fn drop(&mut self) {
        self.task.abort();
        self.inner.generation.send_modify(|g| *g += 1);
    }
}

/// Closes with a reset rather than an orderly FIN. (`set_linger` is
/// deprecated because a non-zero linger blocks on drop; zero never blocks.)
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn pipe(state: Arc<Inner>, mut client: TcpStream) {
    let mut cut = state.generation.subscribe();
    cut.borrow_and_update();
    let Ok(mut server) = TcpStream::connect(state.upstream).await else {
        reset(client);
        return;
    };
    state.counters.piped.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let was_cut = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = cut.changed() => true,
    };
    if was_cut {
        state.counters.reset.fetch_add(1, Ordering::Relaxed);
        reset(client);
        reset(server);
    }
}
