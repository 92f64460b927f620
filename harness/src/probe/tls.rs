//! The certificate a server presents: NATS sends its INFO in the clear and then upgrades the connection,
//! so the probe reads that line, then shakes hands trusting only the lab's CA, and keeps the leaf
//! certificate the server sent. Used to prove that a reissued certificate is the one now served.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

use super::raw::{info_of, tls_config, Trust};

/// The DER of the certificate `addr` (`host:port`) serves, verified against `ca_pem` for `server_name`.
pub async fn served_cert(addr: &str, ca_pem: &str, server_name: &str) -> Result<Vec<u8>, String> {
    let work = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        // INFO comes first, in the clear; the handshake follows it on the same socket.
        let (tcp, _) = info_of(tcp, addr).await?;
        let config = tls_config(&Trust { ca_pem: ca_pem.to_string(), client: None })?;
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| format!("{server_name}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| format!("TLS with {addr}: {e}"))?;
        let (_, session) = tls.get_ref();
        let cert = session.peer_certificates().and_then(|c| c.first()).ok_or_else(|| format!("{addr} presented no certificate"))?;
        Ok(cert.as_ref().to_vec())
    };
    tokio::time::timeout(Duration::from_secs(10), work).await.map_err(|_| format!("no TLS handshake with {addr} within 10 s"))?
}

/// The DER of the first certificate in a PEM text.
pub fn der_of(pem: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map(|c| c.as_ref().to_vec()).map_err(|e| e.to_string())
}
