//! The tar archives the engine's copy and build APIs take, written with the `tar` crate: directories and
//! files with explicit modes (secrets 0600 in 0700 directories), long paths in GNU form.

use crate::errors::{Error, Result};

pub struct Archive {
    builder: tar::Builder<Vec<u8>>,
}

fn failed(path: &str, e: std::io::Error) -> Error {
    Error::Backend { backend: "container", reason: format!("pack {path} to copy into a container: {e}") }
}

impl Archive {
    pub fn new() -> Archive {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        Archive { builder }
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        let path = format!("{}/", path.trim_matches('/'));
        self.builder.append_data(&mut h, &path, std::io::empty()).map_err(|e| failed(&path, e))
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        let path = path.trim_start_matches('/');
        self.builder.append_data(&mut h, path, data).map_err(|e| failed(path, e))
    }

    pub fn finish(self) -> Result<Vec<u8>> {
        self.builder.into_inner().map_err(|e| failed("the archive", e))
    }
}

impl Default for Archive {
    fn default() -> Self {
        Archive::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_paths_modes_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}/nodes/cim-prod-001/nats.conf", "/tmp/a-rather-long-runs-root".repeat(12));
        let mut t = Archive::new();
        t.dir("/x/secrets", 0o700).unwrap();
        t.file("/x/secrets/ca.pem", 0o600, b"pem").unwrap();
        t.file(&long, 0o640, &[7u8; 1000]).unwrap();
        t.file("Dockerfile", 0o644, super::super::image::DOCKERFILE.as_bytes()).unwrap();
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, t.finish().unwrap()).unwrap();
        let out = std::process::Command::new("tar").arg("-tvf").arg(&archive).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 4, "{listing}");
        assert!(lines[0].starts_with("drwx------") && lines[0].ends_with(" x/secrets/"), "{}", lines[0]);
        assert!(lines[1].starts_with("-rw-------") && lines[1].ends_with(" x/secrets/ca.pem"), "{}", lines[1]);
        assert!(lines[2].starts_with("-rw-r-----") && lines[2].ends_with(long.trim_start_matches('/')), "{}", lines[2]);
        assert!(lines[3].starts_with("-rw-r--r--") && lines[3].ends_with(" Dockerfile"), "{}", lines[3]);
        let x = std::process::Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(dir.path()).output().unwrap();
        assert!(x.status.success());
        assert_eq!(std::fs::read(dir.path().join("x/secrets/ca.pem")).unwrap(), b"pem");
        assert_eq!(std::fs::read(dir.path().join(long.trim_start_matches('/'))).unwrap(), vec![7u8; 1000]);
    }
}
