//! A TCP proxy in front of one inter-node link (a route, or a leaf remote dialing a hub's leafnode port) that
//! injects faults at run time: latency with jitter, a bandwidth cap, a cut link and a blackhole. In the spirit
//! of Toxiproxy's toxics and nats-server's own test `netProxy`; this kernel has no netem, so it is all done here.
//!
//! Shape: one accept task owns a `JoinSet` of connection tasks; each connection task runs its four pumps
//! (reader and writer per direction) as futures inside itself and owns both sockets, so ending a connection,
//! dropping the proxy or shutting it down never leaks a task or a socket.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::shape::{ReleaseClock, TokenBucket, Toxics};

/// Bytes read from a socket in one go; one chunk is delayed and shaped as a unit.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction between reader and writer. When full, the reader stops reading and TCP
/// backpressure reaches the sender, as on a real slow link.
const QUEUE: usize = 256;
/// How long to wait for the upstream to accept before treating it as refused.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    /// From the dialing side (e.g. the leaf) to the upstream (e.g. the hub).
    Upstream,
    /// From the upstream back to the dialing side.
    Downstream,
    Both,
}

impl Direction {
    fn indices(self) -> &'static [usize] {
        match self {
            Direction::Upstream => &[UP],
            Direction::Downstream => &[DOWN],
            Direction::Both => &[UP, DOWN],
        }
    }
}

const UP: usize = 0;
const DOWN: usize = 1;

/// What the link has done so far, for reports. Bytes count what was delivered to the far side; bytes eaten by a
/// blackhole count as dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Client → upstream bytes delivered.
    pub bytes_up: u64,
    /// Upstream → client bytes delivered.
    pub bytes_down: u64,
    pub dropped_up: u64,
    pub dropped_down: u64,
    /// Connections accepted from clients (including those refused at once).
    pub accepted: u64,
    /// Connections closed at once: the link was cut or the upstream could not be dialed.
    pub refused: u64,
    /// Connections open now.
    pub open: u64,
}

#[derive(Default)]
struct AtomicCounters {
    bytes: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicU64,
}

/// The link's fault state. Epochs let a connection tell that a cut or blackhole happened since it was born even
/// when it only wakes after a later `heal()` (watch channels coalesce updates).
#[derive(Debug, Default, Clone)]
struct LinkState {
    cut: bool,
    blackhole: bool,
    cut_epoch: u64,
    blackhole_epoch: u64,
    closing: bool,
}

/// What a connection saw of the link state when it was born.
#[derive(Debug, Clone, Copy)]
struct Birth {
    cut_epoch: u64,
    blackhole_epoch: u64,
    blackholed: bool,
}

impl LinkState {
    fn birth(&self) -> Birth {
        Birth { cut_epoch: self.cut_epoch, blackhole_epoch: self.blackhole_epoch, blackholed: self.blackhole }
    }

    /// Whether this connection's bytes are being (or were) eaten: its stream is broken from then on.
    fn dropping(&self, b: Birth) -> bool {
        self.blackhole || b.blackholed || self.blackhole_epoch != b.blackhole_epoch
    }

    /// Why a connection born at `b` must end now, if it must.
    fn ends(&self, b: Birth) -> Option<End> {
        if self.closing {
            Some(End::Closing)
        } else if self.cut_epoch != b.cut_epoch {
            Some(End::Cut)
        } else if !self.blackhole && self.dropping(b) {
            Some(End::Healed)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum End {
    Closing,
    Cut,
    /// A blackholed connection after `heal()`: its byte stream has holes, so it is closed for a clean reconnect.
    Healed,
}

struct Shared {
    name: String,
    upstream: SocketAddr,
    state: watch::Sender<LinkState>,
    toxics: [Mutex<Toxics>; 2],
    /// One bucket per direction for the whole link, not per connection: a link's capacity is shared by whatever
    /// crosses it, and a reconnect must not get a fresh allowance while the old connection still drains.
    buckets: [Mutex<Option<TokenBucket>>; 2],
    counters: AtomicCounters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data (plain numbers) is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn toxics(&self, dir: usize) -> Toxics {
        lock(&self.toxics[dir]).clone()
    }

    fn set_toxics(&self, dir: usize, t: Toxics) {
        *lock(&self.buckets[dir]) = t.bandwidth_bytes_per_s.map(|r| TokenBucket::new(r, Instant::now()));
        *lock(&self.toxics[dir]) = t;
    }

    /// How long to wait before sending `n` bytes in this direction.
    fn reserve(&self, dir: usize, n: usize) -> Duration {
        lock(&self.buckets[dir]).as_mut().map(|b| b.reserve(n, Instant::now())).unwrap_or(Duration::ZERO)
    }
}

/// A proxy in front of one link. Dropping it aborts every task and closes every socket; `shutdown` does the
/// same and waits for it.
pub struct LinkProxy {
    local: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl LinkProxy {
    /// Listens on `listen` (e.g. `127.0.0.1:0`) and forwards every accepted connection to `upstream`.
    pub async fn start(name: &str, listen: SocketAddr, upstream: SocketAddr) -> io::Result<LinkProxy> {
        LinkProxy::serve(name, TcpListener::bind(listen).await?, upstream)
    }

    /// Serves on a listener bound by the caller — e.g. inside another network namespace, where the socket
    /// stays however the accepting task runs. Needs a tokio runtime.
    pub fn from_std(name: &str, listener: std::net::TcpListener, upstream: SocketAddr) -> io::Result<LinkProxy> {
        listener.set_nonblocking(true)?;
        LinkProxy::serve(name, TcpListener::from_std(listener)?, upstream)
    }

    fn serve(name: &str, listener: TcpListener, upstream: SocketAddr) -> io::Result<LinkProxy> {
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            upstream,
            state: watch::Sender::new(LinkState::default()),
            toxics: Default::default(),
            buckets: Default::default(),
            counters: AtomicCounters::default(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        tracing::debug!(proxy = name, %local, %upstream, "link proxy listening");
        Ok(LinkProxy { local, shared, task: Some(task) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Sets the toxics of a direction, replacing what was there; applies at once to open and new connections
    /// (a chunk already queued keeps the release time it was given). A new bandwidth cap starts with a full bucket.
    pub fn set(&self, dir: Direction, toxics: Toxics) {
        for &d in dir.indices() {
            self.shared.set_toxics(d, toxics.clone());
        }
    }

    /// The toxics of a direction (for `Both`, the upstream direction's).
    pub fn toxics(&self, dir: Direction) -> Toxics {
        self.shared.toxics(dir.indices()[0])
    }

    /// Closes every open connection (reset) and resets new ones as soon as they are accepted, until `heal()`.
    pub fn cut(&self) {
        tracing::debug!(proxy = %self.shared.name, "cut");
        self.shared.state.send_modify(|s| {
            s.cut = true;
            s.cut_epoch += 1;
        });
    }

    /// Keeps connections open but drops every byte in both directions (and their closes: a FIN is lost in a
    /// partition too), so only pings can notice. New connections are accepted and get nothing. Until `heal()`.
    pub fn blackhole(&self) {
        tracing::debug!(proxy = %self.shared.name, "blackhole");
        self.shared.state.send_modify(|s| {
            s.blackhole = true;
            s.blackhole_epoch += 1;
        });
    }

    /// Lifts a `cut()` (a blackhole and toxics stay).
    pub fn uncut(&self) {
        tracing::debug!(proxy = %self.shared.name, "uncut");
        self.shared.state.send_modify(|s| s.cut = false);
    }

    /// Lifts a `blackhole()` (a cut and toxics stay); connections that were blackholed are closed (their byte
    /// streams have holes) so the peers reconnect cleanly.
    pub fn unblackhole(&self) {
        tracing::debug!(proxy = %self.shared.name, "unblackhole");
        self.shared.state.send_modify(|s| s.blackhole = false);
    }

    /// Back to a clean link: no cut, no blackhole, no toxics. Connections that were blackholed are closed (their
    /// byte streams have holes) so the peers reconnect cleanly.
    pub fn heal(&self) {
        tracing::debug!(proxy = %self.shared.name, "heal");
        self.set(Direction::Both, Toxics::default());
        self.shared.state.send_modify(|s| {
            s.cut = false;
            s.blackhole = false;
        });
    }

    pub fn counters(&self) -> Counters {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            bytes_up: get(&c.bytes[UP]),
            bytes_down: get(&c.bytes[DOWN]),
            dropped_up: get(&c.dropped[UP]),
            dropped_down: get(&c.dropped[DOWN]),
            accepted: get(&c.accepted),
            refused: get(&c.refused),
            open: get(&c.open),
        }
    }

    /// Stops listening, closes every connection and waits until every task has finished.
    pub async fn shutdown(mut self) {
        self.shared.state.send_modify(|s| s.closing = true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task with it.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    let mut state = shared.state.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(serve(client, peer, shared.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning on the error.
                    tracing::warn!(proxy = %shared.name, "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            changed = state.changed() => if changed.is_err() || state.borrow_and_update().closing { break },
        }
    }
    drop(listener);
    // Each connection sees `closing` itself and closes its sockets; wait for all of them.
    while conns.join_next().await.is_some() {}
}

/// Closes a socket with a reset, like a refused or torn link (no lingering FIN handshake).
fn reset(stream: TcpStream) {
    // A zero linger never blocks on close (the deprecation is about non-zero lingers): it just sends RST.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn serve(client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut state = shared.state.subscribe();
    let s = state.borrow_and_update().clone();
    let birth = s.birth();
    let counters = &shared.counters;
    if s.cut {
        counters.refused.fetch_add(1, Ordering::Relaxed);
        return reset(client);
    }
    counters.open.fetch_add(1, Ordering::Relaxed);
    let end = if s.blackhole {
        swallow(client, &shared, &mut state, birth).await
    } else {
        forward(client, &shared, &mut state, birth).await
    };
    counters.open.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(proxy = %shared.name, %peer, ?end, "connection closed");
}

/// A connection born into a blackhole: never dialed upstream, everything it sends is eaten, until the state ends it.
async fn swallow(
    mut client: TcpStream,
    shared: &Shared,
    state: &mut watch::Receiver<LinkState>,
    birth: Birth,
) -> String {
    let eat = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => std::future::pending::<()>().await,
                Ok(n) => {
                    shared.counters.dropped[UP].fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    };
    // `eat` never completes: only the link state ends this connection.
    let end = tokio::select! {
        end = ended(state, birth) => end,
        _ = eat => End::Closing,
    };
    reset(client);
    format!("{end:?}")
}

async fn forward(client: TcpStream, shared: &Shared, state: &mut watch::Receiver<LinkState>, birth: Birth) -> String {
    let upstream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(shared.upstream)).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => return refuse(client, shared, format!("dial {}: {e}", shared.upstream)),
        Err(_) => return refuse(client, shared, format!("dial {}: no answer in {DIAL_TIMEOUT:?}", shared.upstream)),
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client, mut upstream) = (client, upstream);
    let outcome = {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        let pumps = async {
            let r = tokio::try_join!(
                pipe(cr, uw, UP, shared, state.clone(), birth),
                pipe(ur, cw, DOWN, shared, state.clone(), birth)
            );
            // Inside a blackhole a close or reset is lost like any byte: hold on until the state ends us.
            if state.borrow().dropping(birth) {
                std::future::pending::<()>().await;
            }
            r
        };
        let mut watcher = state.clone();
        tokio::select! {
            r = pumps => match r {
                Ok(_) => None,
                Err(e) => Some(format!("{e}")),
            },
            end = ended(&mut watcher, birth) => Some(format!("{end:?}")),
        }
    };
    match outcome {
        // Both closes were forwarded: a plain close lets the kernel deliver what is still in the send buffers
        // (a reset here would discard the tail of the stream and its FIN).
        None => "both sides closed".to_string(),
        Some(why) => {
            reset(client);
            reset(upstream);
            why
        }
    }
}

fn refuse(client: TcpStream, shared: &Shared, why: String) -> String {
    tracing::debug!(proxy = %shared.name, "{why}");
    shared.counters.refused.fetch_add(1, Ordering::Relaxed);
    reset(client);
    why
}

/// Waits until the link state ends a connection born at `birth`.
async fn ended(state: &mut watch::Receiver<LinkState>, birth: Birth) -> End {
    loop {
        if let Some(end) = state.borrow_and_update().ends(birth) {
            return end;
        }
        if state.changed().await.is_err() {
            return End::Closing;
        }
    }
}

/// A chunk in flight, or `None` for the sender's close (it is delayed like data so it never overtakes it).
type Queued = (Instant, Option<Vec<u8>>);

/// One direction: a reader stamping release times and a writer honouring them and the bandwidth cap.
async fn pipe(
    src: ReadHalf<'_>,
    dst: WriteHalf<'_>,
    dir: usize,
    shared: &Shared,
    state: watch::Receiver<LinkState>,
    birth: Birth,
) -> io::Result<()> {
    let (tx, rx) = mpsc::channel::<Queued>(QUEUE);
    tokio::try_join!(read_side(src, tx, dir, shared), write_side(dst, rx, dir, shared, state, birth)).map(|_| ())
}

async fn read_side(mut src: ReadHalf<'_>, tx: mpsc::Sender<Queued>, dir: usize, shared: &Shared) -> io::Result<()> {
    let mut rng = ChaCha8Rng::from_entropy();
    let mut clock = ReleaseClock::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = src.read(&mut buf).await?;
        let delay = shared.toxics(dir).delay(&mut rng);
        let at = clock.release(Instant::now(), delay);
        // Copy out what was read: a queued chunk holds only its own bytes, not a whole read buffer.
        let item = (n > 0).then(|| buf[..n].to_vec());
        let eof = item.is_none();
        if tx.send((at, item)).await.is_err() || eof {
            return Ok(());
        }
    }
}

async fn write_side(
    mut dst: WriteHalf<'_>,
    mut rx: mpsc::Receiver<Queued>,
    dir: usize,
    shared: &Shared,
    state: watch::Receiver<LinkState>,
    birth: Birth,
) -> io::Result<()> {
    while let Some((at, item)) = rx.recv().await {
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        let dropping = || state.borrow().dropping(birth);
        match item {
            Some(bytes) if dropping() => {
                shared.counters.dropped[dir].fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Some(bytes) => {
                let wait = shared.reserve(dir, bytes.len());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                // A blackhole may have opened while the bucket held these bytes back.
                let counter = if dropping() { &shared.counters.dropped[dir] } else { &shared.counters.bytes[dir] };
                if !dropping() {
                    dst.write_all(&bytes).await?;
                }
                counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            None if dropping() => return Ok(()),
            None => {
                dst.shutdown().await?;
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(s: &LinkState, f: impl FnOnce(&mut LinkState)) -> LinkState {
        let mut s = s.clone();
        f(&mut s);
        s
    }

    #[test]
    fn a_cut_ends_older_connections_even_if_healed_before_they_look() {
        let s0 = LinkState::default();
        let born = s0.birth();
        let cut_then_healed = after(&s0, |s| {
            s.cut_epoch += 1;
            s.cut = false;
        });
        assert!(matches!(cut_then_healed.ends(born), Some(End::Cut)));
        // A connection born after the cut is not ended by it.
        assert!(cut_then_healed.ends(cut_then_healed.birth()).is_none());
    }

    #[test]
    fn blackholed_connections_drop_bytes_and_end_only_on_heal() {
        let s0 = LinkState::default();
        let born = s0.birth();
        assert!(!s0.dropping(born));
        let holed = after(&s0, |s| {
            s.blackhole = true;
            s.blackhole_epoch += 1;
        });
        assert!(holed.dropping(born));
        assert!(holed.ends(born).is_none(), "a blackhole keeps connections open");
        let healed = after(&holed, |s| s.blackhole = false);
        assert!(matches!(healed.ends(born), Some(End::Healed)));
        // Born inside the blackhole: also closed on heal; born after the heal: clean.
        assert!(matches!(healed.ends(holed.birth()), Some(End::Healed)));
        assert!(!healed.dropping(healed.birth()) && healed.ends(healed.birth()).is_none());
    }

    #[test]
    fn closing_ends_everything() {
        let s0 = LinkState::default();
        let closing = after(&s0, |s| s.closing = true);
        assert!(matches!(closing.ends(s0.birth()), Some(End::Closing)));
    }
}
