//! NATS clients for probes: how to reach one account on one node, and connecting with exactly those
//! credentials (and TLS material where the lab uses TLS).

use std::path::PathBuf;
use std::time::Duration;

use crate::errors::{Error, Result};

/// Everything needed to connect as one user.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Access {
    pub url: String,
    pub user: Option<String>,
    #[serde(skip)]
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub creds: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Access {
    pub fn options(&self) -> async_nats::ConnectOptions {
        let mut o = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(3))
            .request_timeout(Some(Duration::from_secs(5)));
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            if self.creds.is_none() {
                o = o.user_and_password(u.clone(), p.clone());
            }
        }
        if let Some(ca) = &self.ca {
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            o = o.add_client_certificate(c.clone(), k.clone());
        }
        o
    }

    pub async fn connect(&self, name: &str) -> Result<async_nats::Client> {
        self.connect_with(name, self.options()).await
    }

    /// Connects with prepared options (e.g. with an event callback to see permission violations).
    pub async fn connect_with(&self, name: &str, mut options: async_nats::ConnectOptions) -> Result<async_nats::Client> {
        if let Some(creds) = &self.creds {
            options = options.credentials_file(creds).await.map_err(|e| Error::Connect {
                target: self.url.clone(),
                reason: format!("read creds {}: {e}", creds.display()),
            })?;
        }
        options
            .name(name)
            .connect(&self.url)
            .await
            .map_err(|e| Error::Connect { target: format!("{} as {}", self.url, self.user.as_deref().unwrap_or("-")), reason: e.to_string() })
    }
}

/// A request whose answer is JSON (the system account's `$SYS.REQ.*`), within `within`.
pub async fn request_json(client: &async_nats::Client, subject: &str, within: std::time::Duration) -> std::result::Result<serde_json::Value, String> {
    let asked = client.request(subject.to_string(), "".into());
    let msg = tokio::time::timeout(within, asked).await.map_err(|_| format!("no answer to {subject} within {} s", within.as_secs()))?.map_err(|e| format!("{subject}: {e}"))?;
    serde_json::from_slice(&msg.payload).map_err(|e| format!("{subject}: bad answer: {e}"))
}
