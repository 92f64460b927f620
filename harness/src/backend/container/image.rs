//! The image nodes run: by default `natslab/nats-server:<12 hex of the binary's sha256>`, built `FROM scratch`
//! from the same static nats-server the process backend runs, once per binary; or one the user names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use testcontainers::bollard;

use bollard::query_parameters::{BuildImageOptions, CreateImageOptions};

use super::archive::Archive;
use super::engine::{engine_error, Engine};
use super::{IMAGE_REPO, LABEL_IMAGE};
use crate::errors::{Error, Result};
use crate::server::NatsServer;

/// The label goes first, so even intermediate layers of a failed build are recognisably ours.
pub const DOCKERFILE: &str = "FROM scratch\nLABEL natslab=1\nCOPY nats-server /nats-server\nENTRYPOINT [\"/nats-server\"]\n";

/// Tags already hashed in this process, by (binary, size, mtime): hashing 19 MB is not free.
type TagCache = HashMap<(PathBuf, u64, Option<std::time::SystemTime>), String>;

/// `natslab/nats-server:<first 12 hex of sha256(binary)>`: the cache key is the binary itself.
pub fn image_tag(binary: &Path) -> Result<String> {
    static CACHE: OnceLock<Mutex<TagCache>> = OnceLock::new();
    let meta = std::fs::metadata(binary).map_err(Error::io(format!("read {}", binary.display())))?;
    let key = (binary.to_path_buf(), meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(tag) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(tag);
    }
    let bytes = std::fs::read(binary).map_err(Error::io(format!("read {}", binary.display())))?;
    let hex: String = Sha256::digest(&bytes).iter().take(6).map(|b| format!("{b:02x}")).collect();
    let tag = format!("{IMAGE_REPO}:{hex}");
    if let Ok(mut c) = cache.lock() {
        c.insert(key, tag.clone());
    }
    Ok(tag)
}

/// The image to run: the one `NATSLAB_IMAGE` names, else ours for this binary, built if missing.
pub(super) async fn ensure_image(engine: &Engine, server: &NatsServer, named: Option<String>) -> Result<String> {
    // One build at a time in this process: parallel labs would otherwise all build the same image.
    static BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = BUILD.lock().await;
    match named {
        Some(image) => {
            if engine.docker.inspect_image(&image).await.is_err() {
                pull(engine, &image).await?;
            }
            Ok(image)
        }
        None => {
            let tag = image_tag(&server.path)?;
            if engine.docker.inspect_image(&tag).await.is_err() {
                build(engine, &server.path, &tag).await?;
            }
            Ok(tag)
        }
    }
}

async fn build(engine: &Engine, binary: &Path, tag: &str) -> Result<()> {
    let bin = tokio::fs::read(binary).await.map_err(Error::io(format!("read {}", binary.display())))?;
    let mut ctx = Archive::new();
    ctx.file("Dockerfile", 0o644, DOCKERFILE.as_bytes())?;
    ctx.file("nats-server", 0o755, &bin)?;
    let opts = BuildImageOptions {
        t: Some(tag.to_string()),
        labels: Some(HashMap::from([(LABEL_IMAGE.to_string(), "1".to_string())])),
        rm: true,
        forcerm: true,
        q: true,
        ..Default::default()
    };
    let mut progress = engine.docker.build_image(opts, None, Some(bollard::body_full(ctx.finish()?.into())));
    while let Some(item) = progress.next().await {
        let info = item.map_err(engine_error(format!("build image {tag}")))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            return Err(Error::Backend { backend: "container", reason: format!("build image {tag}: {e}") });
        }
    }
    engine.docker.inspect_image(tag).await.map(|_| ()).map_err(engine_error(format!("build image {tag} (not there after the build)")))
}

async fn pull(engine: &Engine, image: &str) -> Result<()> {
    let opts = CreateImageOptions { from_image: Some(image.to_string()), ..Default::default() };
    let mut progress = engine.docker.create_image(Some(opts), None, None);
    while let Some(item) = progress.next().await {
        item.map_err(|e| Error::Backend { backend: "container", reason: format!("image {image} is not on this engine and could not be pulled: {e}") })?;
    }
    Ok(())
}

