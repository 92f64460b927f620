//! Removing what runs leave on the engine: a run's containers and networks (by their label), and for
//! `natslab down --all` those of runs whose supervisor is gone, plus dangling layers of our image builds.

use std::collections::HashMap;

use testcontainers::bollard::Docker;
use testcontainers::bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, PruneImagesOptions, RemoveContainerOptions};

use super::engine::Engine;
use super::{LABEL_IMAGE, LABEL_RUN, LABEL_SUPERVISOR};

pub(super) fn force_remove() -> RemoveContainerOptions {
    RemoveContainerOptions { force: true, v: true, ..Default::default() }
}

/// Removes every container and network labeled with `run_id`.
pub async fn remove_run(docker: &Docker, run_id: &str) -> (usize, usize) {
    remove_labeled(docker, &format!("{LABEL_RUN}={run_id}")).await
}

/// Removes every container and network carrying `label` (`key=value`). Containers go first (a network with
/// endpoints cannot be removed); a second pass catches a container whose creation was still in flight.
async fn remove_labeled(docker: &Docker, label: &str) -> (usize, usize) {
    let filter = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let mut removed = (0, 0);
    for _ in 0..2 {
        let list = ListContainersOptions { all: true, filters: Some(filter.clone()), ..Default::default() };
        let ids: Vec<String> = docker.list_containers(Some(list)).await.unwrap_or_default().into_iter().filter_map(|c| c.id).collect();
        let results = futures::future::join_all(ids.iter().map(|id| docker.remove_container(id, Some(force_remove())))).await;
        removed.0 += results.iter().filter(|r| r.is_ok()).count();
        let nets = ListNetworksOptions { filters: Some(filter.clone()) };
        for net in docker.list_networks(Some(nets)).await.unwrap_or_default() {
            if let Some(name) = net.name {
                if docker.remove_network(&name).await.is_ok() {
                    removed.1 += 1;
                }
            }
        }
    }
    removed
}

/// What `remove_leftovers` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    pub containers: usize,
    pub networks: usize,
    pub images: usize,
}

/// For `natslab down --all`: removes every container and network of a run whose supervising natslab
/// process is gone (crashed, `kill -9`ed), and dangling layers of natslab image builds. `None` when there is
/// no Docker engine (nothing to clean).
pub async fn remove_leftovers() -> Option<Leftovers> {
    let engine = Engine::connect().await.ok()?;
    let docker = &engine.docker;
    let mut out = remove_dead(docker, LABEL_RUN).await;
    let dangling = HashMap::from([
        ("dangling".to_string(), vec!["true".to_string()]),
        ("label".to_string(), vec![format!("{LABEL_IMAGE}=1")]),
    ]);
    if let Ok(r) = docker.prune_images(Some(PruneImagesOptions { filters: Some(dangling) })).await {
        out.images = r.images_deleted.map(|d| d.len()).unwrap_or(0);
    }
    Some(out)
}

/// Removes the containers, then the networks, carrying `label` (`key` or `key=value`) whose supervisor is
/// not alive. A live lab's are never touched.
pub(super) async fn remove_dead(docker: &Docker, label: &str) -> Leftovers {
    let dead = |labels: Option<&HashMap<String, String>>| {
        let pid = labels.and_then(|l| l.get(LABEL_SUPERVISOR)).and_then(|p| p.parse::<u32>().ok());
        !pid.is_some_and(crate::backend::spawn::alive)
    };
    let mut out = Leftovers::default();
    let filter = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let list = ListContainersOptions { all: true, filters: Some(filter.clone()), ..Default::default() };
    let containers = docker.list_containers(Some(list)).await.unwrap_or_default();
    for id in containers.iter().filter(|c| dead(c.labels.as_ref())).filter_map(|c| c.id.as_ref()) {
        if docker.remove_container(id, Some(force_remove())).await.is_ok() {
            out.containers += 1;
        }
    }
    let nets = docker.list_networks(Some(ListNetworksOptions { filters: Some(filter) })).await.unwrap_or_default();
    for name in nets.iter().filter(|n| dead(n.labels.as_ref())).filter_map(|n| n.name.as_ref()) {
        if docker.remove_network(name).await.is_ok() {
            out.networks += 1;
        }
    }
    out
}

/// Containers and networks labeled with a run id, as (container names, network names): for tests and for
/// checking that a run left nothing behind.
pub async fn resources_of_run(run_id: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let engine = Engine::connect().await?;
    let docker = &engine.docker;
    let filter = HashMap::from([("label".to_string(), vec![format!("{LABEL_RUN}={run_id}")])]);
    let list = ListContainersOptions { all: true, filters: Some(filter.clone()), ..Default::default() };
    let containers = docker.list_containers(Some(list)).await.map_err(|e| e.to_string())?;
    let names = containers.into_iter().flat_map(|c| c.names.unwrap_or_default()).collect();
    let nets = docker.list_networks(Some(ListNetworksOptions { filters: Some(filter) })).await.map_err(|e| e.to_string())?;
    Ok((names, nets.into_iter().filter_map(|n| n.name).collect()))
}

