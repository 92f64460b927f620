//! The NATS wire protocol by hand, for the one thing a client library will not do: speak plaintext to a
//! port that should demand TLS, with valid credentials, so that a refusal can only be about TLS. Reads the
//! server's INFO (its `tls_required`), answers the nonce in operator mode (the user's nkey signs it, as
//! every client does), sends CONNECT and PING, and reports what came back.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Credentials for a hand-made CONNECT.
#[derive(Debug, Clone)]
pub enum Hello {
    Password { user: String, pass: String },
    /// The text of a `.creds` file (user JWT and nkey seed).
    Creds(String),
}

impl Hello {
    /// How `access` says CONNECT by hand: its creds file's text, else its user and password.
    pub fn of(access: &super::client::Access) -> Result<Hello, String> {
        match &access.creds {
            Some(path) => Ok(Hello::Creds(std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?)),
            None => Ok(Hello::Password { user: access.user.clone().unwrap_or_default(), pass: access.password.clone().unwrap_or_default() }),
        }
    }
}

/// What a plaintext session saw.
#[derive(Debug, Default)]
pub struct Session {
    /// The server's INFO, parsed.
    pub info: Option<Value>,
    /// Everything after INFO, as text (PONG, -ERR, nothing).
    pub rest: String,
    /// Why the session ended, when the socket failed rather than closed.
    pub ended: Option<String>,
}

impl Session {
    pub fn tls_required(&self) -> Option<bool> {
        self.info.as_ref()?.get("tls_required").and_then(Value::as_bool).or(Some(false))
    }

    /// Whether the server answered PING: it took the plaintext CONNECT.
    pub fn answered(&self) -> bool {
        self.rest.contains("PONG")
    }

    /// The server's last word, e.g. `-ERR 'Secure Connection - TLS Required'`.
    pub fn said(&self) -> String {
        let err = self.rest.lines().find(|l| l.starts_with("-ERR"));
        match (err, &self.ended) {
            (Some(e), _) => e.trim().to_string(),
            (None, Some(e)) => format!("the connection ended ({e})"),
            (None, None) if self.rest.trim().is_empty() => "nothing, and closed the connection".into(),
            (None, None) => self.rest.lines().next().unwrap_or_default().trim().to_string(),
        }
    }
}

/// Opens `addr` in plaintext, reads INFO, sends CONNECT with `hello` (as a leaf when `leaf`) and PING, and
/// reads until the server closes or `within` passes.
pub async fn plaintext(addr: &str, hello: &Hello, leaf: bool, within: Duration) -> Result<Session, String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let mut session = Session::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut first = String::new();
    // INFO comes first, in plaintext even on a TLS port (unless it is TLS-first).
    while !first.contains("\r\n") {
        let n = tokio::time::timeout(within, s.read(&mut buf)).await.map_err(|_| format!("no INFO from {addr} within {within:?}"))?.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{addr} closed before sending INFO: {first}"));
        }
        first.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let (line, after) = first.split_once("\r\n").unwrap_or((&first, ""));
    session.info = line.strip_prefix("INFO ").and_then(|j| serde_json::from_str(j).ok());
    session.rest.push_str(after);
    let nonce = session.info.as_ref().and_then(|i| i.get("nonce")).and_then(Value::as_str).unwrap_or_default().to_string();
    let connect = connect_json(hello, &nonce, leaf)?;
    if let Err(e) = s.write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes()).await {
        session.ended = Some(format!("write refused: {e}"));
        return Ok(session);
    }
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Ok(session),
            Ok(Ok(0)) => return Ok(session),
            Ok(Ok(n)) => {
                session.rest.push_str(&String::from_utf8_lossy(&buf[..n]));
                if session.answered() {
                    return Ok(session);
                }
            }
            Ok(Err(e)) => {
                session.ended = Some(e.to_string());
                return Ok(session);
            }
        }
    }
}

pub fn connect_json(hello: &Hello, nonce: &str, leaf: bool) -> Result<Value, String> {
    let mut c = if leaf {
        json!({ "tls_required": false, "name": "natslab-plaintext", "hub": false })
    } else {
        json!({ "verbose": false, "pedantic": false, "tls_required": false, "name": "natslab-plaintext", "lang": "raw", "version": "0", "protocol": 1 })
    };
    match hello {
        Hello::Password { user, pass } => {
            c["user"] = json!(user);
            c["pass"] = json!(pass);
        }
        Hello::Creds(text) => {
            let (jwt, seed) = parse_creds(text)?;
            let kp = nkeys::KeyPair::from_seed(&seed).map_err(|e| format!("the creds' seed: {e}"))?;
            let sig = kp.sign(nonce.as_bytes()).map_err(|e| format!("sign the nonce: {e}"))?;
            c["jwt"] = json!(jwt);
            c["sig"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig));
        }
    }
    Ok(c)
}

/// The user JWT and nkey seed of a `.creds` file.
pub fn parse_creds(text: &str) -> Result<(String, String), String> {
    let block = |begin: &str| {
        let start = text.find(begin)? + begin.len();
        let body = &text[start..];
        let end = body.find("------END")?;
        Some(body[..end].trim().to_string())
    };
    let jwt = block("-----BEGIN NATS USER JWT-----").ok_or("no user JWT in the creds")?;
    let seed = block("-----BEGIN USER NKEY SEED-----").ok_or("no nkey seed in the creds")?;
    Ok((jwt, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_round_trip_and_sign() {
        let kp = nkeys::KeyPair::new_user();
        let text = crate::secrets::jwt::creds("eyJ.jwt.x", &kp.seed().unwrap());
        let (jwt, seed) = parse_creds(&text).unwrap();
        assert_eq!(jwt, "eyJ.jwt.x");
        let c = connect_json(&Hello::Creds(text), "nonce-1", false).unwrap();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c["sig"].as_str().unwrap()).unwrap();
        assert!(nkeys::KeyPair::from_seed(&seed).unwrap().verify(b"nonce-1", &sig).is_ok());
    }

    #[test]
    fn sessions_say_what_the_server_said() {
        let s = Session { info: Some(json!({ "tls_required": true })), rest: "-ERR 'Secure Connection - TLS Required'\r\n".into(), ended: None };
        assert_eq!(s.tls_required(), Some(true));
        assert!(!s.answered());
        assert_eq!(s.said(), "-ERR 'Secure Connection - TLS Required'");
        let open = Session { info: Some(json!({})), rest: "PONG\r\n".into(), ended: None };
        assert_eq!(open.tls_required(), Some(false));
        assert!(open.answered());
    }
}
