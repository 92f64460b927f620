//! `natslab backup` / `natslab restore`: every declared stream of a running lab saved through the
//! JetStream API into a directory a person can keep (one `<place>/<stream>/` per stream, in the layout
//! `nats stream backup` writes: `backup.json` + `stream.tar.s2`), and put back from one.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::errors::{Error, Result};
use crate::lab::Lab;
use crate::probe::js::{self, API};
use crate::probe::snapshot;

/// One stream saved or restored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Done {
    /// `hub` or the leaf's name.
    pub place: String,
    pub stream: String,
    pub dir: PathBuf,
    pub messages: u64,
    pub bytes: usize,
}

/// Where each declared stream lives: (place, a node to reach it on, account, stream).
fn declared(lab: &Lab) -> Vec<(String, String, String, String)> {
    let t = &lab.plan.topology;
    let mut out = Vec::new();
    let first_hub = t.hub_names().next().unwrap_or_default().to_string();
    for s in &t.hub.streams {
        let account = s.account.clone().unwrap_or_else(|| t.hub.accounts[0].name.clone());
        out.push(("hub".to_string(), first_hub.clone(), account, s.name.clone()));
    }
    for l in &t.leaves {
        for s in &l.streams {
            let account = s.account.clone().unwrap_or_else(|| l.accounts[0].name.clone());
            out.push((l.name.clone(), l.name.clone(), account, s.name.clone()));
        }
    }
    out
}

fn failed(what: String) -> impl FnOnce(String) -> Error {
    move |reason| Error::Provision { what, reason }
}

/// Saves every declared stream into `out/<place>/<stream>/`.
pub async fn save(lab: &Lab, out: &Path) -> Result<Vec<Done>> {
    let mut done = Vec::new();
    for (place, node, account, stream) in declared(lab) {
        let what = format!("back up {place}/{stream}");
        let c = lab.probe(&node, &account).await?;
        let snap = snapshot::take(&c, API, &stream).await.map_err(failed(what.clone()))?;
        let dir = out.join(&place).join(&stream);
        let messages = js::state_u64(&snap.state, "messages");
        let extra = json!({ "place": place, "account": account, "run": lab.plan.run_id, "topology": lab.plan.topology.name });
        snapshot::write(&dir, &snap, &extra).map_err(failed(what))?;
        done.push(Done { place, stream, dir, messages, bytes: snap.data.len() });
    }
    Ok(done)
}

/// Restores every stream saved under `from` (as `save` wrote it) into the lab. A stream that exists is
/// refused before anything is restored, unless `replace` (it is deleted first).
pub async fn restore(lab: &Lab, from: &Path, replace: bool) -> Result<Vec<Done>> {
    let wanted: Vec<_> = declared(lab).into_iter().filter(|(place, _, _, stream)| from.join(place).join(stream).join("backup.json").is_file()).collect();
    if wanted.is_empty() {
        return Err(Error::Usage {
            what: format!("{} holds no backup of this lab's streams", from.display()),
            hint: "name a directory `natslab backup --out` wrote (<place>/<stream>/backup.json)".into(),
        });
    }
    // Every check first: nothing is restored if one would be refused.
    let mut present = Vec::new();
    for (place, node, account, stream) in &wanted {
        let c = lab.probe(node, account).await?;
        match js::stream_info(&c, API, stream).await {
            Ok(_) => present.push(format!("{place}/{stream}")),
            Err(e) if js::not_found(&e) => {}
            Err(e) => return Err(Error::Provision { what: format!("look up {place}/{stream}"), reason: e }),
        }
    }
    if !present.is_empty() && !replace {
        return Err(Error::Usage {
            what: format!("these streams exist in the lab: {}", present.join(", ")),
            hint: "a restore makes a stream anew: delete them first, or pass --replace".into(),
        });
    }
    let mut done = Vec::new();
    for (place, node, account, stream) in wanted {
        let what = format!("restore {place}/{stream}");
        let dir = from.join(&place).join(&stream);
        let (snap, _) = snapshot::read(&dir).map_err(failed(what.clone()))?;
        let c = lab.probe(&node, &account).await?;
        if present.contains(&format!("{place}/{stream}")) {
            js::api(&c, API, &format!("STREAM.DELETE.{stream}"), &json!({})).await.map_err(failed(what.clone()))?;
        }
        let info = snapshot::restore(&c, API, &snap).await.map_err(failed(what))?;
        let messages = js::state_u64(&info["state"], "messages");
        done.push(Done { place, stream, dir, messages, bytes: snap.data.len() });
    }
    Ok(done)
}
