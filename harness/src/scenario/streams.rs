//! Where declared streams live and how they reach each other: every stream placed on the hub cluster or a
//! leaf with its account, the copies (sources and mirrors) that cross a leaf link in either direction, and
//! literal probe subjects a stream, its filters and its transforms accept. Shared by the JetStream, network
//! and state families, which all derive from the same declarations.

use async_nats::Client;

use super::probes::connect;
use super::Outcome;
use crate::lab::Lab;
use crate::topology::{subject, Leaf, Source, Stream, Topology};

/// A declared stream with where it lives: the hub cluster (`leaf: None`) or one leaf, and its account.
pub(super) struct Placed<'t> {
    pub(super) stream: &'t Stream,
    pub(super) leaf: Option<&'t Leaf>,
    pub(super) account: String,
}

impl Placed<'_> {
    pub(super) fn node(&self) -> &str {
        self.leaf.map_or("hub", |l| l.name.as_str())
    }

    pub(super) fn label(&self) -> String {
        format!("{}/{}", self.node(), self.stream.name)
    }
}

pub(super) fn placed(t: &Topology) -> Vec<Placed<'_>> {
    let mut out: Vec<Placed<'_>> = t
        .hub
        .streams
        .iter()
        .map(|s| Placed { stream: s, leaf: None, account: s.account.clone().unwrap_or_else(|| t.hub.accounts[0].name.clone()) })
        .collect();
    for l in &t.leaves {
        for s in &l.streams {
            out.push(Placed { stream: s, leaf: Some(l), account: s.account.clone().unwrap_or_else(|| l.accounts[0].name.clone()) });
        }
    }
    out
}

/// A full-access client of the stream's account where the stream lives: the leaf, or the first hub that answers.
pub(super) async fn client_for(lab: &Lab, p: &Placed<'_>) -> Result<Client, Outcome> {
    match p.leaf {
        Some(l) => connect(lab, &l.name, &p.account).await,
        None => hub_client(lab, &p.account, None).await,
    }
}

/// A full-access client of a hub account, on the first hub (other than `avoid`) that accepts it. No hub
/// accepting it is a violation: the declared hubs should.
pub(super) async fn hub_client(lab: &Lab, account: &str, avoid: Option<&str>) -> Result<Client, Outcome> {
    let mut last = format!("no hub to reach account {account} on");
    for h in lab.plan.hubs().filter(|h| Some(h.name.as_str()) != avoid) {
        match lab.probe(&h.name, account).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e.to_string(),
        }
    }
    Err(Outcome::Violated(last))
}

/// The servers that answer for a domain: the hubs for the hub's, the leaf for its own.
pub(super) fn servers_of(t: &Topology, domain: &str) -> Vec<String> {
    if t.hub.jetstream.as_ref().and_then(|j| j.domain.as_deref()) == Some(domain) {
        return t.hub_names().map(String::from).collect();
    }
    t.leaves.iter().filter(|l| t.domain_of(Some(l)) == Some(domain)).map(|l| l.name.clone()).collect()
}

pub(super) fn account_of<'a>(s: &'a Stream, default: &'a str) -> &'a str {
    s.account.as_deref().unwrap_or(default)
}

/// One stream copying another across a leaf link — a source or a mirror — with where each lives.
pub(super) struct Copy<'t> {
    pub(super) into: &'t Placed<'t>,
    pub(super) from: Placed<'t>,
    pub(super) via: &'t Source,
    pub(super) mirror: bool,
}

/// Every copy across a leaf link the topology declares, found by declaration (the source's name, domain
/// and the account its API is reachable in), in both directions.
pub(super) fn copies<'t>(t: &'t Topology, streams: &'t [Placed<'t>]) -> Vec<Result<Copy<'t>, (&'t Placed<'t>, &'t Source, String)>> {
    let mut out = Vec::new();
    for p in streams {
        let froms = p.stream.sources.iter().map(|s| (s, false)).chain(p.stream.mirror.iter().map(|m| (m, true)));
        for (src, mirror) in froms {
            let Some(domain) = src.domain.as_deref() else { continue };
            let found = match p.leaf {
                // A hub stream copies a leaf's stream through the leaf's domain, from the account the link lands in.
                None => t.leaves.iter().find(|l| t.domain_of(Some(l)) == Some(domain)).and_then(|l| {
                    let r = (0..l.remotes.len()).find(|r| l.hub_account(*r) == p.account)?;
                    let local = l.remote_account(&l.remotes[r]).to_string();
                    let s = l.streams.iter().find(|s| s.name == src.name && account_of(s, &l.accounts[0].name) == local)?;
                    Some(Placed { stream: s, leaf: Some(l), account: local })
                }),
                // A leaf stream copies a hub stream through the hub's domain, in an account its remotes land in.
                Some(l) if t.domain_of(None) == Some(domain) => {
                    let links: Vec<String> = l.remotes.iter().enumerate().filter(|(_, r)| l.remote_account(r) == p.account).map(|(i, _)| l.hub_account(i)).collect();
                    t.hub
                        .streams
                        .iter()
                        .find(|h| h.name == src.name && links.iter().any(|a| a == account_of(h, &t.hub.accounts[0].name)))
                        .map(|h| Placed { stream: h, leaf: None, account: account_of(h, &t.hub.accounts[0].name).to_string() })
                }
                Some(_) => None,
            };
            out.push(match found {
                Some(from) => Ok(Copy { into: p, from, via: src, mirror }),
                None => Err((p, src, format!("no stream {} in domain {domain} is reachable from {}'s account {}", src.name, p.node(), p.account))),
            });
        }
    }
    out
}

/// A client of a stream's account where it lives, not through `avoid` (a node just restarted).
pub(super) async fn client_for_avoiding(lab: &Lab, p: &Placed<'_>, avoid: &str) -> Result<Client, Outcome> {
    match p.leaf {
        Some(l) => connect(lab, &l.name, &p.account).await,
        None => hub_client(lab, &p.account, Some(avoid)).await,
    }
}

/// How the live stream and its consumers differ from their declaration (`provision::stream_drift`,
/// `consumer_drift`), as text; a missing stream or consumer is one such difference.
pub(super) async fn drift_of(lab: &Lab, p: &Placed<'_>) -> Result<Vec<String>, Outcome> {
    use crate::probe::js;
    let c = client_for(lab, p).await?;
    let mut out = Vec::new();
    match js::stream_info(&c, js::API, &p.stream.name).await {
        Ok(info) => out.extend(crate::provision::stream_drift(p.stream, &info["config"]).into_iter().map(|d| format!("{}: {d}", p.label()))),
        Err(e) => {
            out.push(format!("{}: {e}", p.label()));
            return Ok(out);
        }
    }
    for cons in &p.stream.consumers {
        match js::consumer_info(&c, js::API, &p.stream.name, &cons.name).await {
            Ok(info) => out.extend(crate::provision::consumer_drift(cons, &info["config"]).into_iter().map(|d| format!("{}/{}: {d}", p.label(), cons.name))),
            Err(e) => out.push(format!("{}/{}: {e}", p.label(), cons.name)),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// Subjects for probe messages

/// A literal subject matched by one of the stream's subjects and every filter, carrying `tok` (and `i`
/// where a `>` leaves room, so that each message of a series has its own subject).
pub(super) fn sample(stream_subjects: &[String], filters: &[&str], tok: &str, i: usize) -> Option<String> {
    stream_subjects.iter().find_map(|s| {
        let pattern = filters.iter().try_fold(s.clone(), |acc, f| subject::meet(&acc, f))?;
        Some(literal(&pattern, tok, i))
    })
}

pub(super) fn literal(pattern: &str, tok: &str, i: usize) -> String {
    pattern
        .split('.')
        .map(|t| match t {
            "*" => tok.to_string(),
            ">" => format!("{tok}.{i}"),
            lit => lit.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A subject through a subject transform (`*` and `>` in order, `{{wildcard(n)}}` and `$n` by position).
pub(super) fn transform(src: &str, dest: &str, subject_in: &str) -> Option<String> {
    let s: Vec<&str> = subject_in.split('.').collect();
    let src: Vec<&str> = src.split('.').collect();
    let (mut stars, mut rest) = (Vec::new(), None);
    for (i, t) in src.iter().enumerate() {
        match *t {
            "*" => stars.push(*s.get(i)?),
            ">" => {
                if s.len() <= i {
                    return None;
                }
                rest = Some(s[i..].join("."));
                break;
            }
            lit => {
                if s.get(i) != Some(&lit) {
                    return None;
                }
            }
        }
    }
    if rest.is_none() && src.len() != s.len() {
        return None;
    }
    let mut next = 0;
    let mut out = Vec::new();
    for t in dest.split('.') {
        let piece = match t {
            "*" => {
                next += 1;
                stars.get(next - 1)?.to_string()
            }
            ">" => rest.clone()?,
            t if t.starts_with('$') => stars.get(t[1..].parse::<usize>().ok()?.checked_sub(1)?)?.to_string(),
            t if t.starts_with("{{") => {
                let n: String = t.chars().filter(char::is_ascii_digit).collect();
                let lower = t.to_ascii_lowercase();
                if !lower.contains("wildcard") {
                    return None;
                }
                stars.get(n.parse::<usize>().ok()?.checked_sub(1)?)?.to_string()
            }
            lit => lit.to_string(),
        };
        out.push(piece);
    }
    Some(out.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meeting_patterns() {
        use crate::topology::subject::meet;
        assert_eq!(meet("domain.*.events.>", "domain.graph.>").as_deref(), Some("domain.graph.events.>"));
        assert_eq!(meet("domain.>", "domain.orders.>").as_deref(), Some("domain.orders.>"));
        assert_eq!(meet("orders.>", "orders.>").as_deref(), Some("orders.>"));
        assert_eq!(meet("a.*", "a.b").as_deref(), Some("a.b"));
        assert_eq!(meet("a.b", "a.c"), None);
        assert_eq!(meet("a.b", "a.b.c"), None);
        assert_eq!(meet("metrics.>", "metrics"), None);
    }

    #[test]
    fn sample_subjects() {
        let subjects = vec!["domain.*.events.>".to_string(), "domain.*.commands.>".to_string()];
        assert_eq!(sample(&subjects, &["domain.graph.>"], "t", 2).as_deref(), Some("domain.graph.events.t.2"));
        assert_eq!(sample(&subjects, &["domain.x.commands.go"], "t", 0).as_deref(), Some("domain.x.commands.go"));
        assert_eq!(sample(&subjects, &["nomatch.>"], "t", 0), None);
        assert_eq!(sample(&[], &[], "t", 0), None);
    }

    #[test]
    fn transforms() {
        assert_eq!(transform("domain.>", "leaf.store-1.domain.>", "domain.a.b").as_deref(), Some("leaf.store-1.domain.a.b"));
        assert_eq!(transform("a.*.*", "x.{{wildcard(2)}}.$1", "a.p.q").as_deref(), Some("x.q.p"));
        assert_eq!(transform("a.*", "b.*", "a.p").as_deref(), Some("b.p"));
        assert_eq!(transform("a.*", "b.*", "c.p"), None);
        assert_eq!(transform("a.*", "b.{{partition(3,1)}}", "a.p"), None);
    }
}
