//! Network faults on inter-node links: a small TCP proxy per link (`proxy`) and its pure shaping arithmetic
//! (`shape`).

pub mod proxy;
pub mod shape;

pub use proxy::{Counters, Direction, LinkProxy};
pub use shape::{burst_bytes, Toxics};

/// A listening socket bound inside the network namespace at `netns` (`/run/netns/<name>`,
/// `/proc/<pid>/ns/net`): a socket belongs to the namespace it was created in, so a short-lived thread
/// enters the namespace, binds, and ends — no thread of the runtime ever changes namespace. Needs root.
pub fn bind_in_netns(netns: &std::path::Path, addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(netns)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            std::net::TcpListener::bind(addr)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
    })
}
