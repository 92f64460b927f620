//! Race-free addresses for labs running side by side: each lab holds an exclusive `flock` on one slot file
//! and its nodes listen on `127.77.<slot>.<n>`. The kernel releases the lock when the holder dies, even by
//! SIGKILL, so a crashed run never strands its slot. Ports are fixed per role, so a restarted node comes
//! back at the same address (leaf remotes and routes keep working), and no port is ever "checked free
//! and used later".

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::errors::{Error, Result};

pub const SLOTS: usize = 250;

/// Ports per role on a lab address. Above the well-known NATS ports (a developer's own nats-server on
/// 0.0.0.0:4222 would block 127.77.x.y:4222) and below the ephemeral range (no outgoing socket takes them).
pub const CLIENT_PORT: u16 = 24222;
pub const CLUSTER_PORT: u16 = 26222;
pub const LEAF_PORT: u16 = 27422;
pub const HTTP_PORT: u16 = 28222;

#[derive(Debug)]
pub struct Slot {
    pub index: usize,
    _lock: File,
}

impl Slot {
    pub fn ip(&self, node_index: usize) -> String {
        format!("127.77.{}.{}", self.index, node_index + 1)
    }
}

fn lock_dir() -> PathBuf {
    std::env::var_os("NATSLAB_SLOT_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("natslab-slots"))
}

/// Takes the first free slot, starting from a point derived from the pid to spread parallel runs.
pub fn acquire() -> Result<Slot> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let start = std::process::id() as usize % SLOTS;
    for k in 0..SLOTS {
        let index = 1 + (start + k) % SLOTS;
        let path = dir.join(format!("slot-{index}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(format!("open {}", path.display())))?;
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Slot { index, _lock: file });
        }
    }
    Err(Error::NoSlot(SLOTS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_labs_never_share_a_slot() {
        let a = acquire().unwrap();
        let b = acquire().unwrap();
        assert_ne!(a.index, b.index);
        let ia = a.index;
        drop(a);
        // Released on drop: a later lab may reuse it.
        let mut again = Vec::new();
        for _ in 0..SLOTS - 1 {
            match acquire() {
                Ok(s) => again.push(s),
                Err(_) => break,
            }
        }
        assert!(again.iter().any(|s| s.index == ia));
    }
}
