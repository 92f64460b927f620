//! Core traffic across every declared flow while a lab is disturbed (the upgrade family): on each flow a
//! publisher on the sending side and a subscriber on the receiving side, under the declared names, counting
//! what crosses. Core NATS delivers at most once, so what a restart loses is a measurement, never a
//! violation. The clients reconnect by themselves (the hub side to any hub); a flow counts its sends only
//! once its first message has arrived (interest has crossed the link; the one or two in flight then are
//! the counts' error), and ends with an end marker behind its last message, so nothing in flight at the end
//! is miscounted as lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinHandle;

use super::acked_writes::connect_cluster;
use super::mapping::{hub_sees, leaf_sees, Link};
use super::probes::{connect, token};
use crate::lab::Lab;
use crate::topology::subject::example;
use crate::topology::Topology;

/// How often each flow publishes: enough to see a restart's gap, little enough not to load the lab.
const PACE: Duration = Duration::from_millis(20);
/// How long a subscriber waits for the end marker once its publisher has stopped.
const DRAIN: Duration = Duration::from_secs(10);
const END: &[u8] = b"natslab-core-end";

/// One flow's counts.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowCount {
    pub flow: String,
    pub sent: u64,
    pub received: u64,
}

struct Flowing {
    flow: String,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    publisher: JoinHandle<()>,
    subscriber: JoinHandle<()>,
}

pub struct CoreTraffic {
    flows: Vec<Flowing>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl CoreTraffic {
    /// Starts a publisher and a subscriber on every declared export and import of every leaf link.
    pub async fn start(lab: &Lab, t: &Topology) -> Result<CoreTraffic, String> {
        let hubs: Vec<String> = t.hub_names().map(String::from).collect();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut flows = Vec::new();
        for l in &t.leaves {
            for r in 0..l.remotes.len() {
                let link = Link::of(t, l, r);
                let leaf_client = || async { connect(lab, &l.name, &link.local).await.map_err(|o| o.text().to_string()) };
                for f in &link.remote.exports {
                    let subject = example(&f.subject, &token());
                    let Some(arrives) = hub_sees(&link, &subject).into_iter().find(|(a, _)| *a == link.peer).map(|(_, s)| s) else { continue };
                    let from = leaf_client().await?;
                    let to = connect_cluster(lab, &hubs, &link.peer, "natslab-core-subscriber").await?;
                    flows.push(Flowing::start(format!("{} → {} {}", link.label(), link.peer, arrives), from, subject, to, arrives, stopped.clone()).await?);
                }
                for f in &link.remote.imports {
                    let subject = example(&f.subject, &token());
                    let Some(arrives) = leaf_sees(t, l, &link.local, &link.peer, &subject).into_iter().next() else { continue };
                    let from = connect_cluster(lab, &hubs, &link.peer, "natslab-core-publisher").await?;
                    let to = leaf_client().await?;
                    flows.push(Flowing::start(format!("{} {} → {} {arrives}", link.peer, subject, link.label()), from, subject, to, arrives, stopped.clone()).await?);
                }
            }
        }
        Ok(CoreTraffic { flows, stop })
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Stops every publisher, lets each subscriber drain to the end marker, and returns the counts.
    pub async fn finish(self) -> Vec<FlowCount> {
        let _ = self.stop.send(true);
        let mut out = Vec::new();
        for f in self.flows {
            let _ = f.publisher.await;
            let abort = f.subscriber.abort_handle();
            if tokio::time::timeout(DRAIN, f.subscriber).await.is_err() {
                abort.abort();
            }
            out.push(FlowCount { flow: f.flow, sent: f.sent.load(Ordering::SeqCst), received: f.received.load(Ordering::SeqCst) });
        }
        out
    }
}

impl Flowing {
    async fn start(
        flow: String,
        from: async_nats::Client,
        subject: String,
        to: async_nats::Client,
        arrives: String,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Flowing, String> {
        let mut sub = to.subscribe(arrives.clone()).await.map_err(|e| format!("subscribe {arrives}: {e}"))?;
        to.flush().await.map_err(|e| format!("flush: {e}"))?;
        let (sent, received, warm) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (r, w) = (received.clone(), warm.clone());
        let subscriber = tokio::spawn(async move {
            let _keep = to;
            while let Some(m) = sub.next().await {
                if m.payload.as_ref() == END {
                    break;
                }
                // The first arrival only opens the count (the publisher counts from then on too).
                if w.swap(true, Ordering::SeqCst) {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let (s, w) = (sent.clone(), warm.clone());
        let publisher = tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                if *stopped.borrow() {
                    break;
                }
                seq += 1;
                // Until the first message has come through, the interest may not have crossed the link yet.
                if from.publish(subject.clone(), seq.to_string().into()).await.is_ok() && w.load(Ordering::SeqCst) {
                    s.fetch_add(1, Ordering::SeqCst);
                }
                tokio::select! {
                    _ = tokio::time::sleep(PACE) => {}
                    _ = stopped.changed() => {}
                }
            }
            let _ = from.publish(subject.clone(), END.into()).await;
            let _ = from.flush().await;
        });
        Ok(Flowing { flow, sent, received, publisher, subscriber })
    }
}
