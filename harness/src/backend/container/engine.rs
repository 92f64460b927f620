//! The connection to a Docker engine: at the engine's own API version, and where its mapped ports are reached.

use std::time::Duration;

use testcontainers::bollard::{self, ClientVersion, Docker};

use crate::errors::Error;

/// A connection to a Docker engine at the engine's own API version, and where its mapped ports are reached.
#[derive(Clone)]
pub struct Engine {
    pub docker: Docker,
    host: String,
    version: (usize, usize),
    /// The address the harness dials for mapped ports.
    pub reach: String,
    /// The host address ports are bound to (`None`: all of them, for a remote engine).
    pub(super) bind: Option<String>,
}

impl Engine {
    /// Connects to `DOCKER_HOST` (default: the local socket). Errors say why there is no usable engine.
    /// bollard 0.21 happens to send unversioned paths, which an engine serves at its own API version; should
    /// it send its own (1.53), an older engine refuses and names its newest, which is then used.
    pub async fn connect() -> Result<Engine, String> {
        let host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.trim().is_empty()).unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let newest = bollard::API_DEFAULT_VERSION;
        let first = open(&host, newest)?;
        let version = match ask_version(&first, &host).await {
            Ok(()) => (newest.major_version, newest.minor_version),
            Err(e) => max_supported(&e).ok_or(e)?,
        };
        let docker = open(&host, &ClientVersion { major_version: version.0, minor_version: version.1 })?;
        ask_version(&docker, &host).await?;
        let (reach, bind) = match host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://")) {
            Some(rest) => (rest.split(':').next().unwrap_or("127.0.0.1").to_string(), None),
            None => ("127.0.0.1".to_string(), Some("127.0.0.1".to_string())),
        };
        Ok(Engine { docker, host, version, reach, bind })
    }

    /// A fresh connection with the same settings, for use on another runtime (cleanup in `Drop`).
    pub(super) fn reopen(&self) -> Result<Docker, String> {
        open(&self.host, &ClientVersion { major_version: self.version.0, minor_version: self.version.1 })
    }
}

/// Whether a Docker engine answers here, and if not why (tests skip on `Err`).
pub async fn engine_available() -> Result<(), String> {
    Engine::connect().await.map(|_| ())
}

fn open(host: &str, v: &ClientVersion) -> Result<Docker, String> {
    let r = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 120, v)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, 120, v)
    } else {
        return Err(format!("DOCKER_HOST={host}: only unix:// and tcp:// engines are supported"));
    };
    r.map_err(|e| format!("connect to the Docker engine at {host}: {e}"))
}

async fn ask_version(docker: &Docker, host: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(10), docker.version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("no usable Docker engine at {host}: {e}")),
        Err(_) => Err(format!("no usable Docker engine at {host}: no answer in 10 s")),
    }
}

/// The engine's newest API version, from its refusal of a newer client ("client version 1.53 is too new.
/// Maximum supported API version is 1.41").
fn max_supported(refusal: &str) -> Option<(usize, usize)> {
    let tail = refusal.split("Maximum supported API version is ").nth(1)?;
    let v: String = tail.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let mut it = v.trim_end_matches('.').split('.').map(|p| p.parse::<usize>().ok());
    Some((it.next()??, it.next()??))
}

/// An engine failure while doing `what`.
pub fn engine_error(what: impl std::fmt::Display) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.to_string();
    move |e| Error::Backend { backend: "container", reason: format!("{what}: {e}") }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_engines_newest_api_version_from_its_refusal() {
        let refusal = "Docker responded with status code 400: client version 1.53 is too new. Maximum supported API version is 1.41";
        assert_eq!(max_supported(refusal), Some((1, 41)));
        assert_eq!(max_supported("connection refused"), None);
    }
}
