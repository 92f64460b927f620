//! Subject flow across leaf links, as real account exports and imports (AUDIT §2a): the guide's remote
//! `import`/`export` with `prefix` are not nats-server options. Each leaf remote lands in its own hub account;
//! hub → leaf subjects are exported by the peer hub account and imported (with the prefix) by the leaf's hub
//! account; leaf → hub subjects the other way round.

use std::collections::BTreeMap;

use super::model::Topology;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountFlows {
    /// Stream exports (subjects offered to other accounts).
    pub exports: Vec<String>,
    pub imports: Vec<Import>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The exporting account's name.
    pub from: String,
    pub subject: String,
    /// The subject seen in the importing account, when renamed by a prefix.
    pub local_subject: Option<String>,
    pub prefix: Option<String>,
}

/// Exports and imports of every hub-side account, keyed by account name.
pub fn flows(t: &Topology) -> BTreeMap<String, AccountFlows> {
    let mut out: BTreeMap<String, AccountFlows> = BTreeMap::new();
    for a in &t.hub.accounts {
        out.entry(a.name.clone()).or_default().exports = a.exports.clone();
    }
    for l in &t.leaves {
        for (r, remote) in l.remotes.iter().enumerate() {
            let link = l.hub_account(r);
            let peer = remote.peer_account(&t.hub).to_string();
            for f in &remote.imports {
                out.entry(link.clone()).or_default().imports.push(Import {
                    from: peer.clone(),
                    subject: f.subject.clone(),
                    local_subject: f.prefix.as_ref().map(|_| f.local_subject()),
                    prefix: f.prefix.clone(),
                });
            }
            for f in &remote.exports {
                let e = out.entry(link.clone()).or_default();
                if !e.exports.contains(&f.subject) {
                    e.exports.push(f.subject.clone());
                }
                out.entry(peer.clone()).or_default().imports.push(Import {
                    from: link.clone(),
                    subject: f.subject.clone(),
                    local_subject: f.prefix.as_ref().map(|_| f.local_subject()),
                    prefix: f.prefix.clone(),
                });
            }
            out.entry(link.clone()).or_default();
        }
    }
    out
}
