//! The link proxy against plain TCP servers on 127.0.0.1, and in front of a real hub's leafnode port.
//!
//! Timing assertions are lower bounds that follow from the mechanism (a delayed or capped byte cannot arrive
//! early); durations measured against real servers are printed, never asserted.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use natslab::net::{burst_bytes, Direction, LinkProxy, Toxics};
use natslab::probe::monitor::Monitor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const DEADLINE: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Fails the test if `fut` does not finish within `within`: every wait has a deadline.
async fn within<T>(within: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(within, fut).await.unwrap_or_else(|_| panic!("{what}: not within {within:?}"))
}

/// Polls `check` every 20 ms until it holds; returns how long that took.
async fn until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// A plain TCP server behind the proxy, counting what reaches it. Its tasks die with it.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    _tasks: JoinSet<()>,
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Echo every byte back; close after the client's close.
    Echo,
    /// Swallow this many bytes, then answer one byte `!`.
    AckAfter(u64),
}

impl Upstream {
    async fn start(behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind(any_port()).await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let (accepted, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut tasks = JoinSet::new();
        let (a, r) = (accepted.clone(), received.clone());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve_upstream(s, behaviour, r.clone()));
            }
        });
        Upstream { addr, accepted, received, _tasks: tasks }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

async fn serve_upstream(mut s: TcpStream, behaviour: Behaviour, received: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        received.fetch_add(n as u64, Ordering::SeqCst);
        total += n as u64;
        let ok = match behaviour {
            Behaviour::Echo => s.write_all(&buf[..n]).await.is_ok(),
            Behaviour::AckAfter(want) if total >= want => s.write_all(b"!").await.is_ok(),
            Behaviour::AckAfter(_) => true,
        };
        if !ok {
            return;
        }
    }
    let _ = s.shutdown().await;
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    within(DEADLINE, "round trip", async {
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.expect("read echo");
        assert_eq!(back, msg);
    })
    .await
}

/// The connection was closed from the far side: EOF or a reset, never data.
async fn closed(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    match within(DEADLINE, what, s.read(&mut buf)).await {
        Ok(0) => {}
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
        other => panic!("{what}: expected EOF or reset, got {other:?}"),
    }
}

#[tokio::test]
async fn clean_link_passes_bytes_and_counts_them_exactly() {
    let up = Upstream::start(Behaviour::Echo).await;
    let proxy = LinkProxy::start("clean", any_port(), up.addr).await.expect("start proxy");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let s = TcpStream::connect(proxy.local_addr()).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let (_, back) = within(DEADLINE, "echo through the proxy", async {
        tokio::join!(
            async {
                w.write_all(&data).await.expect("write");
                w.shutdown().await.expect("close our side");
            },
            async {
                let mut back = Vec::new();
                r.read_to_end(&mut back).await.expect("read to EOF");
                back
            }
        )
    })
    .await;
    assert_eq!(back, data, "bytes came back intact and in order");
    // Our EOF crossed the proxy after the last byte up, the echo's EOF after the last byte down: all counted.
    let c = proxy.counters();
    assert_eq!((c.bytes_up, c.bytes_down), (data.len() as u64, data.len() as u64), "{c:?}");
    assert_eq!((c.accepted, c.refused, c.dropped_up, c.dropped_down), (1, 0, 0, 0), "{c:?}");
    assert_eq!(up.received(), data.len() as u64);
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_the_listener() {
    let up = Upstream::start(Behaviour::Echo).await;
    let proxy = LinkProxy::start("shutdown", any_port(), up.addr).await.expect("start proxy");
    let addr = proxy.local_addr();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    round_trip(&mut s, b"hello").await;
    proxy.shutdown().await;
    closed(&mut s, "open connection after shutdown").await;
    let again = TcpStream::connect(addr).await;
    assert!(again.is_err(), "the listener is gone after shutdown: {again:?}");
}

#[tokio::test]
async fn latency_delays_every_round_trip_by_at_least_the_latency() {
    let up = Upstream::start(Behaviour::Echo).await;
    let proxy = LinkProxy::start("latency", any_port(), up.addr).await.expect("start proxy");
    let mut s = TcpStream::connect(proxy.local_addr()).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    round_trip(&mut s, b"warm").await;
    // Set on a connection that is already open: toxics apply at run time.
    let latency = Duration::from_millis(100);
    proxy.set(Direction::Upstream, Toxics::latency(latency));
    let mut rtts = Vec::new();
    for i in 0..3u8 {
        let t = Instant::now();
        round_trip(&mut s, &[i]).await;
        rtts.push(t.elapsed());
    }
    eprintln!("round trips with {latency:?} upstream latency: {rtts:?}");
    assert!(rtts.iter().all(|d| *d >= latency), "a byte was delivered before its latency: {rtts:?}");
    proxy.heal();
    assert!(proxy.toxics(Direction::Upstream).is_clean());
    proxy.shutdown().await;
}

#[tokio::test]
async fn jitter_never_reorders_the_byte_stream() {
    let up = Upstream::start(Behaviour::Echo).await;
    let proxy = LinkProxy::start("jitter", any_port(), up.addr).await.expect("start proxy");
    // Delays drawn from 0..=20 ms per chunk: a proxy that delayed chunks independently would reorder them.
    proxy.set(
        Direction::Both,
        Toxics { latency: Duration::from_millis(10), jitter: Duration::from_millis(10), ..Toxics::default() },
    );
    let count = 40_000u32;
    let s = TcpStream::connect(proxy.local_addr()).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let (mut r, mut w) = s.into_split();
    let (_, back) = within(Duration::from_secs(20), "numbered stream through jitter", async {
        tokio::join!(
            async {
                // Many small writes, each given a chance to leave as its own segment (and chunk).
                for batch in (0..count).collect::<Vec<_>>().chunks(100) {
                    let bytes: Vec<u8> = batch.iter().flat_map(|n| n.to_be_bytes()).collect();
                    w.write_all(&bytes).await.expect("write");
                    tokio::task::yield_now().await;
                }
                w.shutdown().await.expect("close our side");
            },
            async {
                let mut back = Vec::new();
                r.read_to_end(&mut back).await.expect("read to EOF");
                back
            }
        )
    })
    .await;
    assert_eq!(back.len(), count as usize * 4);
    let first_gap =
        back.chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).enumerate().find(|(i, n)| *i as u32 != *n);
    assert_eq!(first_gap, None, "numbers out of order (position, number)");
    proxy.shutdown().await;
}

#[tokio::test]
async fn bandwidth_cap_bounds_transfer_time_from_below() {
    let total: u64 = 256 * 1024;
    let rate: u64 = 64 * 1024;
    let up = Upstream::start(Behaviour::AckAfter(total)).await;
    let proxy = LinkProxy::start("bandwidth", any_port(), up.addr).await.expect("start proxy");
    proxy.set(Direction::Upstream, Toxics::bandwidth(rate));
    // The bucket starts full with `burst` bytes and then refills at `rate`: no schedule can deliver faster.
    let minimum = Duration::from_secs_f64((total - burst_bytes(rate)) as f64 / rate as f64);
    let start = Instant::now();
    let mut s = TcpStream::connect(proxy.local_addr()).await.expect("connect");
    let data = vec![7u8; total as usize];
    within(Duration::from_secs(20), "capped transfer", async {
        s.write_all(&data).await.expect("write");
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).await.expect("ack after all bytes");
    })
    .await;
    let took = start.elapsed();
    eprintln!("{total} B at {rate} B/s (burst {} B): {took:?}, minimum {minimum:?}", burst_bytes(rate));
    assert_eq!(up.received(), total);
    assert!(took >= minimum, "{total} B crossed a {rate} B/s link in {took:?} < {minimum:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn cut_closes_open_links_refuses_new_ones_until_heal() {
    let up = Upstream::start(Behaviour::Echo).await;
    let proxy = LinkProxy::start("cut", any_port(), up.addr).await.expect("start proxy");
    let mut open = TcpStream::connect(proxy.local_addr()).await.expect("connect");
    round_trip(&mut open, b"before").await;

    proxy.cut();
    closed(&mut open, "open connection after cut").await;
    let mut during = TcpStream::connect(proxy.local_addr()).await.expect("the kernel still completes the handshake");
    closed(&mut during, "new connection during cut").await;
    let c = proxy.counters();
    assert_eq!((c.accepted, c.refused), (2, 1), "{c:?}");
    assert_eq!(up.accepted(), 1, "a connection made during the cut reached the upstream");

    proxy.heal();
    let mut after = TcpStream::connect(proxy.local_addr()).await.expect("connect after heal");
    round_trip(&mut after, b"after").await;
    assert_eq!(up.accepted(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn blackhole_eats_bytes_keeps_links_open_and_heal_closes_them() {
    let up = Upstream::start(Behaviour::Echo).await;
    let proxy = LinkProxy::start("blackhole", any_port(), up.addr).await.expect("start proxy");
    let mut open = TcpStream::connect(proxy.local_addr()).await.expect("connect");
    round_trip(&mut open, b"hello").await;
    assert_eq!(up.received(), 5);

    proxy.blackhole();
    open.write_all(b"lost").await.expect("a write into a blackhole succeeds");
    // Control: once the proxy has counted the bytes as dropped they can never be delivered.
    until(DEADLINE, "proxy drops the bytes", || async { proxy.counters().dropped_up >= 4 }).await;
    assert_eq!(up.received(), 5, "bytes crossed the blackhole");
    let mut buf = [0u8; 16];
    assert!(
        matches!(open.try_read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "the connection must stay open and silent"
    );

    let mut during = TcpStream::connect(proxy.local_addr()).await.expect("new connections are accepted");
    during.write_all(b"void").await.expect("write");
    until(DEADLINE, "proxy drops the new connection's bytes", || async { proxy.counters().dropped_up >= 8 }).await;
    assert_eq!(up.accepted(), 1, "a connection made during the blackhole reached the upstream");
    assert!(matches!(during.try_read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock));

    proxy.heal();
    closed(&mut open, "blackholed connection after heal").await;
    closed(&mut during, "connection born in the blackhole after heal").await;
    let mut after = TcpStream::connect(proxy.local_addr()).await.expect("connect after heal");
    round_trip(&mut after, b"after").await;
    assert_eq!(up.accepted(), 2);
    assert_eq!(up.received(), 10);
    proxy.shutdown().await;
}

/// A nats-server process, killed when dropped.
struct Nats {
    child: Child,
    monitor: String,
    log: PathBuf,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!(
                "--- {} (last lines)\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

impl Nats {
    /// Starts a server on random loopback ports; its monitoring URL is read from its ports file.
    async fn start(bin: &Path, root: &Path, name: &str, extra: &str) -> Nats {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("server dir");
        let conf = dir.join("server.conf");
        let text = format!(
            "server_name: {name}\nlisten: 127.0.0.1:-1\nhttp: 127.0.0.1:-1\nports_file_dir: \"{}\"\n{extra}\n",
            dir.display()
        );
        std::fs::write(&conf, text).expect("write config");
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn nats-server");
        let ports = dir.join(format!(
            "{}_{}.ports",
            bin.file_name().and_then(|f| f.to_str()).unwrap_or("nats-server"),
            child.id()
        ));
        let mut server = Nats { child, monitor: String::new(), log };
        until(DEADLINE, &format!("{name} writes {}", ports.display()), || async { ports.is_file() }).await;
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&ports).expect("read ports file")).expect("ports file is JSON");
        server.monitor = v["monitoring"][0].as_str().expect("monitoring url in ports file").to_string();
        let mon = Monitor::new();
        until(DEADLINE, &format!("{name} healthy (log {})", server.log.display()), || async {
            mon.healthy(&server.monitor).await.is_ok()
        })
        .await;
        server
    }
}

/// How many leaf connections named `name` the hub lists.
async fn hub_lists(mon: &Monitor, hub: &Nats, name: &str) -> usize {
    mon.leafs(&hub.monitor).await.map(|ls| ls.iter().filter(|(n, _)| n == name).count()).unwrap_or(0)
}

async fn leaf_attached(mon: &Monitor, leaf: &Nats) -> bool {
    mon.uplinks(&leaf.monitor).await.map(|u| !u.is_empty()).unwrap_or(false)
}

/// The remote ports of the leaf's uplinks, from its own /leafz: the proxy's port when the link goes through it.
async fn uplink_ports(mon: &Monitor, leaf: &Nats) -> Vec<u64> {
    let v = mon.get(&leaf.monitor, "/leafz").await.unwrap_or_default();
    v["leafs"].as_array().map(|ls| ls.iter().filter_map(|l| l["port"].as_u64()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn real_leaf_link_through_the_proxy_survives_cut_and_blackhole() {
    let server = natslab::server::find_or_install(&mut |m| eprintln!("{m}")).expect("nats-server");
    let root = tempfile::tempdir().expect("tempdir");
    let mon = Monitor::new();
    // The hub pings rarely (the default 2 m, said explicitly): during a blackhole only the leaf notices.
    // `no_advertise`: otherwise the hub's INFO tells the leaf its real leafnode URL, and the leaf's next
    // reconnect goes straight there, around the proxy.
    let hub_conf = "ping_interval: \"2m\"\nleafnodes { listen: 127.0.0.1:-1, no_advertise: true }";
    let hub = Nats::start(&server.path, root.path(), "hub", hub_conf).await;
    let varz = mon.get(&hub.monitor, "/varz").await.expect("hub /varz");
    let leaf_port = varz["leaf"]["port"].as_u64().expect("hub /varz .leaf.port") as u16;
    let proxy = LinkProxy::start("leaf->hub", any_port(), SocketAddr::from(([127, 0, 0, 1], leaf_port)))
        .await
        .expect("start proxy");
    let leaf_conf = format!(
        "ping_interval: \"1s\"\nping_max: 2\nleafnodes {{\n  reconnect_interval: \"100ms\"\n  remotes: [ {{ url: \"nats://{}\" }} ]\n}}",
        proxy.local_addr()
    );
    let leaf = Nats::start(&server.path, root.path(), "leaf", &leaf_conf).await;

    let attach =
        until(DEADLINE, "leaf attaches through the proxy", || async { hub_lists(&mon, &hub, "leaf").await == 1 }).await;
    let via_proxy = vec![u64::from(proxy.local_addr().port())];
    assert_eq!(uplink_ports(&mon, &leaf).await, via_proxy, "the leaf's uplink does not go through the proxy");
    let c = proxy.counters();
    assert!(c.accepted >= 1 && c.bytes_up > 0 && c.bytes_down > 0, "the link did not go through the proxy: {c:?}");

    proxy.cut();
    let cut_drop =
        until(DEADLINE, "hub drops the leaf after cut", || async { hub_lists(&mon, &hub, "leaf").await == 0 }).await;
    until(DEADLINE, "leaf drops its uplink after cut", || async { !leaf_attached(&mon, &leaf).await }).await;
    let refused_during_cut =
        until(DEADLINE, "leaf retries into the cut", || async { proxy.counters().refused >= 1 }).await;
    proxy.heal();
    let cut_heal =
        until(DEADLINE, "leaf re-attaches after heal", || async { hub_lists(&mon, &hub, "leaf").await == 1 }).await;
    assert_eq!(uplink_ports(&mon, &leaf).await, via_proxy, "after the cut the leaf went around the proxy");

    proxy.blackhole();
    let noticed = until(Duration::from_secs(20), "leaf notices the blackhole by pings", || async {
        !leaf_attached(&mon, &leaf).await
    })
    .await;
    // The leaf closed its side, but the close was eaten with everything else: the hub still believes in the link.
    assert_eq!(hub_lists(&mon, &hub, "leaf").await, 1, "the blackhole let a close through to the hub");
    proxy.heal();
    let bh_heal = until(DEADLINE, "leaf re-attaches after the blackhole heals", || async {
        hub_lists(&mon, &hub, "leaf").await == 1 && leaf_attached(&mon, &leaf).await
    })
    .await;
    assert_eq!(uplink_ports(&mon, &leaf).await, via_proxy, "after the blackhole the leaf went around the proxy");

    eprintln!("figures: attach {attach:?}; cut → hub drops leaf {cut_drop:?}; first refused retry seen {refused_during_cut:?} later; heal → re-attached {cut_heal:?}");
    eprintln!(
        "figures: blackhole → leaf notices (ping_interval 1s, ping_max 2) {noticed:?}; heal → re-attached {bh_heal:?}"
    );
    eprintln!("figures: counters {:?}", proxy.counters());
    proxy.shutdown().await;
}
