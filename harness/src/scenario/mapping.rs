//! Subject mapping across leaf links (the guide's remote import/export with prefixes, rendered as account
//! imports/exports, AUDIT §2a), derived from the declared topology. For every leaf remote:
//!
//! - each declared flow arrives under exactly the declared subject (prefixed or as-is), and not also
//!   unprefixed, in both directions;
//! - the leaf's own subscribers still see their unprefixed subjects;
//! - nothing undeclared crosses, either way;
//! - one leaf's traffic reaches another leaf only along a declared path (leaf export → hub account → the
//!   other leaf's import).
//!
//! What a message may reach is computed from the declared model alone (`hub_sees`, `leaf_sees`), never from
//! the renderer, so a rendering mistake shows up as a violation. Negative probes never wait on a clock: the
//! forbidden messages go first, then a control message along the same path; once the control has arrived,
//! the forbidden ones have been delivered wherever they were going (see `probes.rs`, and `barrier` for the
//! hop across the hub cluster).

use std::collections::BTreeSet;

use super::check::{Concluded, Family, Outcome, Pending, Spec};
use super::probes::{attached_hub, barrier, connect, control, list, probe_payload, publish_all, publish_one, subjects_with, sync, token, watch};
use super::Ctx;
use crate::lab::Lab;
use crate::topology::subject::{edges, example, matches};
use crate::topology::{Flow, Leaf, Remote, Topology};

pub async fn run(ctx: &mut Ctx<'_, '_>) {
    let declared = ctx.declared.clone();
    for leaf in &declared.leaves {
        for r in 0..leaf.remotes.len() {
            let link = Link::of(&declared, leaf, r);
            for f in &link.remote.exports {
                export(ctx, &link, f).await;
                local(ctx, &link, f).await;
            }
            for f in &link.remote.imports {
                import(ctx, &link, f).await;
            }
            no_leak_up(ctx, &link).await;
            no_leak_down(ctx, &link).await;
        }
    }
    for a in &declared.leaves {
        for b in declared.leaves.iter().filter(|b| b.name != a.name) {
            for ra in 0..a.remotes.len() {
                for rb in 0..b.remotes.len() {
                    leaf_to_leaf(ctx, &Link::of(&declared, a, ra), &Link::of(&declared, b, rb)).await;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// What the declared topology says may arrive where.

/// One declared leaf remote, with the three accounts it involves.
pub(super) struct Link<'t> {
    pub topology: &'t Topology,
    pub leaf: &'t Leaf,
    pub remote: &'t Remote,
    pub index: usize,
    /// The leaf-local account the remote binds.
    pub local: String,
    /// The hub account the link lands in.
    pub account: String,
    /// The hub account it trades subjects with.
    pub peer: String,
}

impl<'t> Link<'t> {
    pub fn of(t: &'t Topology, leaf: &'t Leaf, index: usize) -> Link<'t> {
        let remote = &leaf.remotes[index];
        Link {
            topology: t,
            leaf,
            remote,
            index,
            local: leaf.remote_account(remote).to_string(),
            account: leaf.hub_account(index),
            peer: remote.peer_account(&t.hub).to_string(),
        }
    }

    pub fn label(&self) -> String {
        self.leaf.remote_label(self.index)
    }
}

fn prefixed(prefix: Option<&str>, subject: &str) -> String {
    match prefix {
        Some(p) => format!("{p}.{subject}"),
        None => subject.to_string(),
    }
}

fn denied(list: &[String], subject: &str) -> bool {
    list.iter().any(|d| matches(d, subject))
}

/// Where a message the leaf publishes on `subject` (in the link's local account) may appear in the hub's
/// accounts, as (account, subject): the link's own hub account as sent, each peer export under its prefix
/// — nothing at all when the remote's `deny_exports` holds it back.
pub(super) fn hub_sees(link: &Link, subject: &str) -> BTreeSet<(String, String)> {
    if denied(&link.remote.deny_exports, subject) {
        return BTreeSet::new();
    }
    let exports = link.remote.exports.iter().filter(|f| matches(&f.subject, subject));
    let mut out: BTreeSet<(String, String)> = exports.map(|f| (link.peer.clone(), prefixed(f.prefix.as_deref(), subject))).collect();
    out.insert((link.account.clone(), subject.to_string()));
    out
}

/// The subjects under which a link's hub account receives what hub account `account` publishes on
/// `subject`: itself as sent, and its declared imports from its peer under their prefixes.
pub(super) fn link_account_gets(t: &Topology, leaf: &Leaf, index: usize, account: &str, subject: &str) -> BTreeSet<String> {
    let r = &leaf.remotes[index];
    let mut out: BTreeSet<String> = if r.peer_account(&t.hub) == account {
        r.imports.iter().filter(|f| matches(&f.subject, subject)).map(|f| prefixed(f.prefix.as_deref(), subject)).collect()
    } else {
        BTreeSet::new()
    };
    if leaf.hub_account(index) == account {
        out.insert(subject.to_string());
    }
    out
}

/// The subjects under which leaf-local account `local` of `leaf` receives what hub account `account`
/// publishes on `subject`: through every remote bound to `local`, less what its `deny_imports` holds back
/// (the subject as it crosses the link).
pub(super) fn leaf_sees(t: &Topology, leaf: &Leaf, local: &str, account: &str, subject: &str) -> BTreeSet<String> {
    (0..leaf.remotes.len())
        .filter(|i| leaf.remote_account(&leaf.remotes[*i]) == local)
        .flat_map(|i| link_account_gets(t, leaf, i, account, subject).into_iter().filter(move |s| !denied(&leaf.remotes[i].deny_imports, s)))
        .collect()
}

/// Where a message leaf A publishes on `subject` may reach leaf B: along A's exports into a hub account,
/// then B's imports from that account.
pub(super) fn leaf_to_leaf_sees(a: &Link, b: &Link, subject: &str) -> BTreeSet<String> {
    hub_sees(a, subject)
        .into_iter()
        .flat_map(|(account, on_hub)| leaf_sees(b.topology, b.leaf, &b.local, &account, &on_hub))
        .collect()
}

/// The subjects to try in negative probes: the edges (`subject::edges`: parents, siblings, one level
/// deeper) of every pattern the declared topology moves anywhere, both as sent and as received
/// (`commands.t`, `hub.commands.t`, `leaf.x.domain.graph.t`...), of every deny list, hub export, and of
/// what the sending accounts' users may use and their streams store; a private subject; random tokens.
/// A flow rendered for the wrong leaf, account or prefix, or wider than declared, is caught wherever it
/// lands. System subjects (`$…`, `_INBOX.…`) are left alone: publishing into an API is not probing.
pub(super) fn probe_subjects(t: &Topology, tok: &str, senders: &[Sender<'_>]) -> Vec<String> {
    let mut patterns: Vec<&str> = Vec::new();
    for a in &t.hub.accounts {
        patterns.extend(a.exports.iter().map(String::as_str));
    }
    let mut received = Vec::new();
    for r in t.leaves.iter().flat_map(|l| &l.remotes) {
        for f in r.imports.iter().chain(&r.exports) {
            patterns.push(&f.subject);
            received.push(f.local_subject());
        }
        patterns.extend(r.deny_imports.iter().chain(&r.deny_exports).map(String::as_str));
    }
    patterns.extend(received.iter().map(String::as_str));
    let mut used = Vec::new();
    for s in senders {
        used.extend(s.patterns(t));
    }
    patterns.extend(used.iter().map(String::as_str));
    let mut out = vec![format!("natslab.private.{tok}"), random_token(), format!("{}.{}.{}", random_token(), random_token(), random_token())];
    for p in patterns.into_iter().filter(|p| !p.starts_with('$') && !p.starts_with("_INBOX")) {
        out.extend(edges(p, tok));
    }
    dedup(out)
}

/// A fresh token, unrelated to the probe's own: a subject nobody declared anything about.
fn random_token() -> String {
    token()
}

/// An account that publishes probes: the hub's (`leaf: None`) or a leaf's.
pub(super) struct Sender<'t> {
    pub leaf: Option<&'t Leaf>,
    pub account: &'t str,
}

impl Sender<'_> {
    /// What this account's users may publish or subscribe to, and what its streams store.
    fn patterns(&self, t: &Topology) -> Vec<String> {
        let (accounts, streams, default) = match self.leaf {
            Some(l) => (&l.accounts, &l.streams, &l.accounts[0].name),
            None => (&t.hub.accounts, &t.hub.streams, &t.hub.accounts[0].name),
        };
        let mut out = Vec::new();
        for u in accounts.iter().filter(|a| a.name == self.account).flat_map(|a| &a.users) {
            for rule in u.permissions.iter().flat_map(|p| p.publish.iter().chain(&p.subscribe)) {
                out.extend(rule.allow.iter().chain(&rule.deny).cloned());
            }
        }
        for s in streams.iter().filter(|s| s.account.as_ref().unwrap_or(default) == self.account) {
            out.extend(s.subjects.iter().cloned());
        }
        out
    }
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Checks.

async fn export(ctx: &mut Ctx<'_, '_>, link: &Link<'_>, f: &Flow) {
    let expected = format!(
        "{} published on {} ({}) arrives in hub account {} as {} only",
        f.subject,
        link.label(),
        link.local,
        link.peer,
        f.local_subject()
    );
    let spec = Spec::new(Family::Mapping, "export", &[&link.label(), &f.subject], format!("export {} {}", link.label(), f.subject), expected);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| export_probe(lab, link, f).await).await;
}

pub(super) async fn export_probe(lab: &Lab, link: &Link<'_>, f: &Flow) -> Concluded {
    let hub = attached_hub(lab, &link.leaf.name, &link.account).await?;
    let tok = token();
    let subject = example(&f.subject, &tok);
    let want: BTreeSet<String> =
        hub_sees(link, &subject).into_iter().filter(|(a, _)| *a == link.peer).map(|(_, s)| s).collect();
    // The link's own account hears everything the leaf sends: the control message's path. The peer's
    // subscription pulls the declared imports into it at once (the server adds them as it subscribes).
    let mut via = watch(lab, &hub, &link.account, ">").await?;
    let mut peer = watch(lab, &hub, &link.peer, ">").await?;
    let leaf = connect(lab, &link.leaf.name, &link.local).await?;
    control(&leaf, &mut via.sub, "leaf → its hub account").await?;
    // The leaf now knows the hub wants everything: one publish crosses, and once the control behind it has
    // arrived, the hub has handed it to every account it is going to.
    let payload = format!("export-{tok}");
    publish_one(&leaf, &subject, &payload).await?;
    control(&leaf, &mut via.sub, "leaf → its hub account").await?;
    let got = subjects_with(&peer.settle().await?, &payload);
    Ok(Outcome::expect(
        got == want,
        format!("published {subject}; {} on {hub} received it as {}", link.peer, list(&got)),
    ))
}

async fn local(ctx: &mut Ctx<'_, '_>, link: &Link<'_>, f: &Flow) {
    let expected = format!("a subscriber on {} ({}) still receives {} unprefixed", link.label(), link.local, f.subject);
    let spec = Spec::new(Family::Mapping, "local", &[&link.label(), &f.subject], format!("local {} {}", link.label(), f.subject), expected);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| local_probe(lab, link, f).await).await;
}

async fn local_probe(lab: &Lab, link: &Link<'_>, f: &Flow) -> Concluded {
    let tok = token();
    let subject = example(&f.subject, &tok);
    let mut w = watch(lab, &link.leaf.name, &link.local, ">").await?;
    let leaf = connect(lab, &link.leaf.name, &link.local).await?;
    let payload = format!("local-{tok}");
    publish_one(&leaf, &subject, &payload).await?;
    let mut seen = control(&leaf, &mut w.sub, "local").await?;
    seen.extend(w.settle().await?);
    let got = subjects_with(&seen, &payload);
    let want = BTreeSet::from([subject.clone()]);
    Ok(Outcome::expect(
        got == want,
        format!("published {subject}; the local subscriber on `>` received it as {}", list(&got)),
    ))
}

async fn import(ctx: &mut Ctx<'_, '_>, link: &Link<'_>, f: &Flow) {
    let expected = format!(
        "{} published in hub account {} arrives on {} ({}) as {} only",
        f.subject,
        link.peer,
        link.label(),
        link.local,
        f.local_subject()
    );
    let spec = Spec::new(Family::Mapping, "import", &[&link.label(), &f.subject], format!("import {} {}", link.label(), f.subject), expected);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| import_probe(lab, link, f).await).await;
}

pub(super) async fn import_probe(lab: &Lab, link: &Link<'_>, f: &Flow) -> Concluded {
    let hub = attached_hub(lab, &link.leaf.name, &link.account).await?;
    let tok = token();
    let subject = example(&f.subject, &tok);
    let want = leaf_sees(link.topology, link.leaf, &link.local, &link.peer, &subject);
    let mut leaf = watch(lab, &link.leaf.name, &link.local, ">").await?;
    let via = connect(lab, &hub, &link.account).await?;
    // Once a control has come down, the hub holds the leaf's interest in everything, and with it the
    // subscriptions its imports need in the peer account.
    control(&via, &mut leaf.sub, "hub link account → leaf").await?;
    let peer = connect(lab, &hub, &link.peer).await?;
    let payload = format!("import-{tok}");
    // After the round trip the hub has fanned it out, before `via` sends the control on the same server.
    publish_one(&peer, &subject, &payload).await?;
    sync(&peer).await?;
    let mut seen = control(&via, &mut leaf.sub, "hub link account → leaf").await?;
    seen.extend(leaf.settle().await?);
    let got = subjects_with(&seen, &payload);
    Ok(Outcome::expect(
        got == want,
        format!("published {subject} in {} on {hub}; the leaf received it as {}", link.peer, list(&got)),
    ))
}

async fn no_leak_up(ctx: &mut Ctx<'_, '_>, link: &Link<'_>) {
    let expected = format!(
        "of what {} ({}) publishes, hub accounts receive only the declared exports, under their declared subjects",
        link.label(),
        link.local
    );
    let spec = Spec::new(Family::Mapping, "leak-up", &[&link.label()], format!("isolation {} → hub", link.label()), expected);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| no_leak_up_probe(lab, link).await).await;
}

async fn no_leak_up_probe(lab: &Lab, link: &Link<'_>) -> Concluded {
    let t = link.topology;
    let hub = attached_hub(lab, &link.leaf.name, &link.account).await?;
    let mut via = watch(lab, &hub, &link.account, ">").await?;
    // Every account on the hub a leaf's message could land in: the declared ones, this link's own (its
    // deny_exports), and every other link's (the way to another leaf).
    let mut watchers = Vec::new();
    for account in receiving_accounts(t, link) {
        let w = if account == link.account { None } else { Some(watch(lab, &hub, &account, ">").await?) };
        watchers.push((account, w));
    }
    let leaf = connect(lab, &link.leaf.name, &link.local).await?;
    // Once a control has crossed, the hub's interest in everything is known to the leaf: whatever it
    // publishes next crosses the link, and only deny_exports and the accounts' boundaries can hold it back.
    control(&leaf, &mut via.sub, "leaf → its hub account").await?;
    let tok = token();
    let probes = probe_subjects(t, &tok, &[Sender { leaf: Some(link.leaf), account: &link.local }]);
    publish_all(&leaf, &probes, &tok).await?;
    let mut own = control(&leaf, &mut via.sub, "leaf → its hub account").await?;
    own.extend(via.settle().await?);
    let mut bad = Vec::new();
    for (account, w) in &mut watchers {
        let seen = match w {
            Some(w) => w.settle().await?,
            None => own.clone(),
        };
        for (i, s) in probes.iter().enumerate() {
            let allowed = reaches(t, link, account, s);
            for got in subjects_with(&seen, &probe_payload(i, &tok)) {
                if !allowed.contains(&got) {
                    bad.push(format!("{s} arrived in {account} as {got}"));
                }
            }
        }
    }
    let accounts: Vec<&str> = watchers.iter().map(|(a, _)| a.as_str()).collect();
    Ok(leak_outcome(&bad, &probes, &format!("hub accounts {} on {hub}", accounts.join(", "))))
}

/// The hub accounts that may receive from a leaf: the declared ones, then every link's account.
fn receiving_accounts(t: &Topology, link: &Link<'_>) -> Vec<String> {
    let mut out: Vec<String> = t.hub.accounts.iter().map(|a| a.name.clone()).collect();
    out.push(link.account.clone());
    for l in &t.leaves {
        out.extend((0..l.remotes.len()).map(|i| l.hub_account(i)));
    }
    dedup(out)
}

/// The subjects under which hub account `account` receives what the link's leaf publishes on `subject`:
/// directly (`hub_sees`), or through a peer account into another link's account by that link's imports.
pub(super) fn reaches(t: &Topology, link: &Link<'_>, account: &str, subject: &str) -> BTreeSet<String> {
    let direct = hub_sees(link, subject);
    let mut out: BTreeSet<String> = direct.iter().filter(|(a, _)| a == account).map(|(_, s)| s.clone()).collect();
    for l in &t.leaves {
        for i in (0..l.remotes.len()).filter(|i| l.hub_account(*i) == account) {
            for (via, on_hub) in direct.iter().filter(|(a, _)| a != account) {
                out.extend(link_account_gets(t, l, i, via, on_hub));
            }
        }
    }
    out
}

async fn no_leak_down(ctx: &mut Ctx<'_, '_>, link: &Link<'_>) {
    let expected = format!(
        "of what hub accounts publish, {} ({}) receives only its declared imports, under their declared subjects",
        link.label(),
        link.local
    );
    let spec = Spec::new(Family::Mapping, "leak-down", &[&link.label()], format!("isolation hub → {}", link.label()), expected);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| no_leak_down_probe(lab, link).await).await;
}

async fn no_leak_down_probe(lab: &Lab, link: &Link<'_>) -> Concluded {
    let t = link.topology;
    let hub = attached_hub(lab, &link.leaf.name, &link.account).await?;
    let mut leaf = watch(lab, &link.leaf.name, &link.local, ">").await?;
    let via = connect(lab, &hub, &link.account).await?;
    // The leaf's interest in everything has reached the hub once a control has come down.
    control(&via, &mut leaf.sub, "hub link account → leaf").await?;
    let tok = token();
    // Publishers: every declared hub account, and the link's own account (all of it crosses, but for the
    // remote's deny_imports).
    let mut accounts: Vec<String> = t.hub.accounts.iter().map(|a| a.name.clone()).collect();
    accounts.push(link.account.clone());
    let senders: Vec<Sender<'_>> = accounts.iter().map(|a| Sender { leaf: None, account: a }).collect();
    let probes = probe_subjects(t, &tok, &senders);
    for a in &accounts {
        let c = if *a == link.account { via.clone() } else { connect(lab, &hub, a).await? };
        publish_all(&c, &probes, &format!("{a}-{tok}")).await?;
        sync(&c).await?;
    }
    let mut seen = control(&via, &mut leaf.sub, "hub link account → leaf").await?;
    seen.extend(leaf.settle().await?);
    let mut bad = Vec::new();
    for account in &accounts {
        for (i, s) in probes.iter().enumerate() {
            let allowed = leaf_sees(t, link.leaf, &link.local, account, s);
            for got in subjects_with(&seen, &probe_payload(i, &format!("{account}-{tok}"))) {
                if !allowed.contains(&got) {
                    bad.push(format!("{s} from {account} arrived as {got}"));
                }
            }
        }
    }
    Ok(leak_outcome(&bad, &probes, &format!("{} from hub accounts {} on {hub}", link.label(), accounts.join(", "))))
}

async fn leaf_to_leaf(ctx: &mut Ctx<'_, '_>, a: &Link<'_>, b: &Link<'_>) {
    let expected = format!(
        "of what {} publishes, {} ({}) receives only what a declared path carries (an export of {} that {} imports)",
        a.label(),
        b.label(),
        b.local,
        a.label(),
        b.label()
    );
    let spec = Spec::new(Family::Mapping, "leaf-to-leaf", &[&a.label(), &b.label()], format!("isolation {} → {}", a.label(), b.label()), expected);
    ctx.check(spec, async |lab: &mut Lab, _: &mut Pending| leaf_to_leaf_probe(lab, a, b).await).await;
}

async fn leaf_to_leaf_probe(lab: &Lab, a: &Link<'_>, b: &Link<'_>) -> Concluded {
    let hub_a = attached_hub(lab, &a.leaf.name, &a.account).await?;
    let hub_b = attached_hub(lab, &b.leaf.name, &b.account).await?;
    let mut on_b = watch(lab, &b.leaf.name, &b.local, ">").await?;
    let via_b = connect(lab, &hub_b, &b.account).await?;
    control(&via_b, &mut on_b.sub, "hub link account → leaf B").await?;
    // B's interest (in whatever accounts it spreads to) has reached A's hub before A publishes.
    barrier(lab, &hub_b, &hub_a).await?;
    let mut via_a = watch(lab, &hub_a, &a.account, ">").await?;
    // Interest in every hub account pulls A's exports into them, so a path through any of them is live.
    let mut _interest = Vec::new();
    for account in &a.topology.hub.accounts {
        _interest.push(watch(lab, &hub_a, &account.name, ">").await?);
    }
    let from_a = connect(lab, &a.leaf.name, &a.local).await?;
    control(&from_a, &mut via_a.sub, "leaf A → its hub account").await?;

    let tok = token();
    let probes = probe_subjects(a.topology, &tok, &[Sender { leaf: Some(a.leaf), account: &a.local }]);
    publish_all(&from_a, &probes, &tok).await?;
    control(&from_a, &mut via_a.sub, "leaf A → its hub account").await?;
    barrier(lab, &hub_a, &hub_b).await?;
    let mut seen = control(&via_b, &mut on_b.sub, "hub link account → leaf B").await?;
    seen.extend(on_b.settle().await?);

    let mut bad = Vec::new();
    for (i, s) in probes.iter().enumerate() {
        let allowed = leaf_to_leaf_sees(a, b, s);
        for got in subjects_with(&seen, &probe_payload(i, &tok)) {
            if !allowed.contains(&got) {
                bad.push(format!("{s} arrived as {got}"));
            }
        }
    }
    Ok(leak_outcome(&bad, &probes, &format!("{} via {hub_a} and {hub_b}", b.label())))
}

fn leak_outcome(bad: &[String], probes: &[String], where_: &str) -> Outcome {
    if bad.is_empty() {
        Outcome::Pass(format!(
            "probed {} subjects ({}); nothing undeclared reached {where_}",
            probes.len(),
            probes.join(", ")
        ))
    } else {
        Outcome::Violated(format!("undeclared deliveries to {where_}: {}", bad.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/subject-mapping.yaml");
        crate::topology::load_file(&path).expect("subject-mapping.yaml loads")
    }

    #[test]
    fn exports_land_in_the_peer_under_their_prefix_only() {
        let t = topology();
        let a = Link::of(&t, &t.leaves[0], 0);
        let own = |s: &str| ("LEAF_SITE_A".to_string(), s.to_string());
        assert_eq!(
            hub_sees(&a, "domain.graph.x"),
            BTreeSet::from([("HUB".to_string(), "leaf.site-a.domain.graph.x".to_string()), own("domain.graph.x")])
        );
        assert_eq!(hub_sees(&a, "metrics.x"), BTreeSet::from([("HUB".to_string(), "metrics.x".to_string()), own("metrics.x")]));
        assert_eq!(hub_sees(&a, "natslab.private.x"), BTreeSet::from([own("natslab.private.x")]));
        assert_eq!(reaches(&t, &a, "HUB", "commands.x"), BTreeSet::new());
    }

    #[test]
    fn deny_lists_hold_back_what_the_accounts_would_carry() {
        let mut t = topology();
        t.leaves[0].remotes[0].deny_exports = vec!["domain.graph.secret.>".into()];
        t.leaves[0].remotes[0].deny_imports = vec!["hub.commands.admin.>".into()];
        let a = Link::of(&t, &t.leaves[0], 0);
        assert!(hub_sees(&a, "domain.graph.secret.x").is_empty(), "nothing crosses, not even into the link's account");
        assert_eq!(hub_sees(&a, "domain.graph.open.x").len(), 2);
        assert!(leaf_sees(&t, &t.leaves[0], "APP", "HUB", "commands.admin.x").is_empty());
        assert_eq!(leaf_sees(&t, &t.leaves[0], "APP", "HUB", "commands.x"), BTreeSet::from(["hub.commands.x".to_string()]));
        // The link's own account reaches the leaf as published, but for deny_imports.
        assert_eq!(leaf_sees(&t, &t.leaves[0], "APP", "LEAF_SITE_A", "anything.x"), BTreeSet::from(["anything.x".to_string()]));
        assert!(leaf_sees(&t, &t.leaves[0], "APP", "LEAF_SITE_A", "hub.commands.admin.x").is_empty());
    }

    #[test]
    fn imports_come_only_from_the_peer_and_only_as_declared() {
        let t = topology();
        let a = &t.leaves[0];
        assert_eq!(leaf_sees(&t, a, "APP", "HUB", "commands.x"), BTreeSet::from(["hub.commands.x".to_string()]));
        assert_eq!(leaf_sees(&t, a, "APP", "HUB", "global.events.x"), BTreeSet::from(["global.events.x".to_string()]));
        assert!(leaf_sees(&t, a, "APP", "HUB", "domain.graph.x").is_empty());
        assert!(leaf_sees(&t, a, "APP", "OTHER", "commands.x").is_empty());
        // site-b does not import global.events.>
        assert!(leaf_sees(&t, &t.leaves[1], "APP", "HUB", "global.events.x").is_empty());
    }

    #[test]
    fn leaf_to_leaf_only_along_declared_paths() {
        let mut t = topology();
        let (a, b) = (Link::of(&t, &t.leaves[0], 0), Link::of(&t, &t.leaves[1], 0));
        for s in ["domain.graph.x", "metrics.x", "commands.x", "hub.commands.x", "natslab.private.x"] {
            assert!(leaf_to_leaf_sees(&a, &b, s).is_empty(), "{s}");
        }
        // A leaf that exports commands.> as-is feeds every leaf importing commands.> from the same account.
        t.leaves[0].remotes[0].exports.push(Flow { subject: "commands.>".into(), prefix: None });
        let (a, b) = (Link::of(&t, &t.leaves[0], 0), Link::of(&t, &t.leaves[1], 0));
        assert_eq!(leaf_to_leaf_sees(&a, &b, "commands.x"), BTreeSet::from(["hub.commands.x".to_string()]));
    }

    #[test]
    fn probe_subjects_cover_flows_their_edges_and_what_senders_use() {
        let t = topology();
        let all = probe_subjects(&t, "t", &[Sender { leaf: Some(&t.leaves[0]), account: "APP" }]);
        for s in [
            "natslab.private.t",
            "domain.graph.t",
            "leaf.site-a.domain.graph.t",
            "leaf.site-b.domain.graph.t",
            "metrics.t",
            "commands.t",
            "hub.commands.t",
            "global.events.t",
            // edges of domain.graph.>: a parent and a sibling
            "domain",
            "domain.t.x",
        ] {
            assert!(all.contains(&s.to_string()), "{s} in {all:?}");
        }
        assert!(all.iter().all(|s| !s.starts_with('$')), "{all:?}");
    }
}
