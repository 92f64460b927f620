//! A NATS connection by hand, over TLS where the server asks for it, for what a client library will not
//! do on purpose: publish a payload above the server's `max_payload` (clients refuse it before sending),
//! subscribe and then never read (a slow consumer), or take subscriptions one by one up to a limit. The
//! server's answers are read back as text.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};

use super::wire::{connect_json, Hello};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The lab's TLS material, as a hand-made client needs it.
#[derive(Debug, Clone)]
pub struct Trust {
    pub ca_pem: String,
    /// A client certificate and key, where the server verifies clients.
    pub client: Option<(String, String)>,
}

pub struct Raw {
    io: Box<dyn Io>,
    pub info: Value,
    /// What the server sent since the connection was taken, as text.
    pub seen: String,
}

/// Reads the server's INFO line from a fresh socket (plaintext, even on a TLS port) byte by byte: what
/// follows it (the server's -ERR, or the TLS handshake) must stay in the socket, not in a buffer.
pub(super) async fn info_of(mut tcp: TcpStream, addr: &str) -> Result<(TcpStream, Value), String> {
    let mut line = Vec::new();
    let read = async {
        let mut b = [0u8; 1];
        while !line.ends_with(b"\n") {
            match tcp.read(&mut b).await {
                Ok(0) => break,
                Ok(_) => line.push(b[0]),
                Err(e) => return Err(format!("read INFO from {addr}: {e}")),
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.map_err(|_| format!("no INFO from {addr} within 10 s"))??;
    let line = String::from_utf8_lossy(&line).to_string();
    let info = line.strip_prefix("INFO ").and_then(|j| serde_json::from_str(j.trim()).ok()).ok_or_else(|| format!("{addr} sent no INFO: {}", line.trim()))?;
    Ok((tcp, info))
}

pub(super) fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for der in rustls_pki_types::CertificateDer::pem_slice_iter(trust.ca_pem.as_bytes()) {
        roots.add(der.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match &trust.client {
        Some((cert, key)) => {
            let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(certs, key).map_err(|e| e.to_string())
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

impl Raw {
    /// Connects to `addr` (`host:port`), upgrading to TLS where the server requires it, and says CONNECT
    /// with `hello` then PING; an error carries the server's refusal.
    pub async fn open(addr: &str, trust: Option<&Trust>, hello: &Hello) -> Result<Raw, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let (tcp, info) = info_of(tcp, addr).await?;
        let tls = info.get("tls_required").and_then(Value::as_bool).unwrap_or(false);
        let io: Box<dyn Io> = if tls {
            let trust = trust.ok_or_else(|| format!("{addr} requires TLS and no CA was given"))?;
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
            let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
            let config = tls_config(trust)?;
            Box::new(tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| format!("TLS with {addr}: {e}"))?)
        } else {
            Box::new(tcp)
        };
        let mut raw = Raw { io, info, seen: String::new() };
        let nonce = raw.info.get("nonce").and_then(Value::as_str).unwrap_or_default().to_string();
        let mut connect = connect_json(hello, &nonce, false)?;
        connect["tls_required"] = serde_json::json!(tls);
        raw.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes()).await?;
        let seen = raw.read_until(Duration::from_secs(10), |s| s.contains("PONG") || s.contains("-ERR")).await;
        if !seen.contains("PONG") {
            return Err(format!("{addr} did not take the connection: {}", seen.trim()));
        }
        // What comes next is the answer to what the caller sends.
        raw.seen.clear();
        Ok(raw)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io.write_all(bytes).await.map_err(|e| format!("write: {e}"))?;
        self.io.flush().await.map_err(|e| format!("write: {e}"))
    }

    /// Reads until `done` holds for what was seen, the server closes, or `within` passes; what was seen.
    pub async fn read_until(&mut self, within: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = vec![0u8; 64 * 1024];
        while !done(&self.seen) {
            match tokio::time::timeout_at(deadline, self.io.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Ok(Ok(_)) => {
                    self.seen.push_str("\n<closed>");
                    break;
                }
                Ok(Err(e)) => {
                    self.seen.push_str(&format!("\n<closed: {e}>"));
                    break;
                }
                Err(_) => break,
            }
        }
        self.seen.clone()
    }
}
