//! The monitoring endpoints (`/healthz`, `/varz`, `/routez`, `/leafz`, `/jsz`, `/accountz`), read as JSON.
//! The real shapes, not the guide's: `/leafz .leafs[]` is the list (`.leafnodes` is a count), and `/varz`
//! has counters, not rates (AUDIT §5).

use std::time::Duration;

use serde_json::Value;

#[derive(Clone)]
pub struct Monitor {
    http: reqwest::Client,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor::new()
    }
}

impl Monitor {
    pub fn new() -> Monitor {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(1500))
            .connect_timeout(Duration::from_millis(500))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Monitor { http }
    }

    pub async fn get(&self, base: &str, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let resp = self.http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() && path.starts_with("/healthz") {
            return Err(format!("{url}: {status} {body}"));
        }
        Ok(body)
    }

    pub async fn healthy(&self, base: &str) -> Result<(), String> {
        let v = self.get(base, "/healthz").await?;
        match v.get("status").and_then(Value::as_str) {
            Some("ok") => Ok(()),
            _ => Err(format!("healthz: {v}")),
        }
    }

    /// Server names this hub has routes to.
    pub async fn route_peers(&self, base: &str) -> Result<Vec<String>, String> {
        let v = self.get(base, "/routez").await?;
        let mut names: Vec<String> = v
            .get("routes")
            .and_then(Value::as_array)
            .map(|rs| rs.iter().filter_map(|r| r.get("remote_name").and_then(Value::as_str).map(String::from)).collect())
            .unwrap_or_default();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Leaf connections as (remote server name, account).
    pub async fn leafs(&self, base: &str) -> Result<Vec<(String, String)>, String> {
        let v = self.get(base, "/leafz").await?;
        Ok(v.get("leafs")
            .and_then(Value::as_array)
            .map(|ls| {
                ls.iter()
                    .map(|l| {
                        let s = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                        (s("name"), s("account"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// This server's own links to hubs (it solicited them: `is_spoke`), as (hub server name, local account).
    pub async fn uplinks(&self, base: &str) -> Result<Vec<(String, String)>, String> {
        let v = self.get(base, "/leafz").await?;
        Ok(v.get("leafs")
            .and_then(Value::as_array)
            .map(|ls| {
                ls.iter()
                    .filter(|l| l.get("is_spoke").and_then(Value::as_bool).unwrap_or(false))
                    .map(|l| {
                        let s = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                        (s("name"), s("account"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The JetStream meta leader as this server sees it, if any.
    pub async fn meta_leader(&self, base: &str) -> Result<Option<String>, String> {
        let v = self.get(base, "/jsz").await?;
        Ok(v.pointer("/meta_cluster/leader").and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from))
    }
}
