//! The WAN/compression measurement runs for real: each leaf compression mode over a slowed, capped link
//! through the link proxy (on netns, the cap from the kernel's htb); compressed modes put fewer bytes on the
//! wire than `off` for the same workload.

mod common;

use std::time::Duration;

use natslab::backend::BackendKind;
use natslab::wan::{run, Profile};

async fn compression_modes(backend: BackendKind) {
    let profile = Profile { latency: Duration::from_millis(10), bandwidth_bytes_per_s: 1 << 20, messages: 100, size: 1024, backend };
    let results = run(&profile, &natslab::lab::Quiet).await.unwrap();
    let by = |m: &str| results.iter().find(|r| r.mode == m).unwrap();
    let off = by("off");
    assert_eq!(off.negotiated, "off");
    assert!(off.wire_bytes >= off.payload_bytes, "{off:?}");
    for m in ["s2_fast", "s2_better", "s2_best"] {
        let r = by(m);
        assert_eq!(r.negotiated, m, "{r:?}");
        assert!(r.wire_bytes < off.wire_bytes, "{m} put {} bytes on the wire, off {}", r.wire_bytes, off.wire_bytes);
    }
    assert!(by("s2_auto").negotiated.starts_with("s2_"), "{:?}", by("s2_auto"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_modes_over_a_wan_link() {
    compression_modes(BackendKind::Process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_modes_over_a_netns_wan_link() {
    if common::netns_or_skip() {
        compression_modes(BackendKind::Netns).await;
    }
}

#[tokio::test]
async fn backends_without_link_proxies_are_refused_with_the_alternatives() {
    let profile = Profile { latency: Duration::from_millis(10), bandwidth_bytes_per_s: 1 << 20, messages: 1, size: 16, backend: BackendKind::Attached };
    let e = run(&profile, &natslab::lab::Quiet).await.unwrap_err().to_string();
    assert!(e.contains("--backend process") && e.contains("netns") && e.contains("container"), "{e}");
}
