//! An OCI bundle: `config.json` beside a `rootfs`, and the container's own `/etc`
//! files, which runc and crun run as they are (`runc run --bundle DIR ID`).

use std::io::{self, Read, Write};
use std::path::Path;

use oci_spec::runtime::Spec;
use rdpull_snapshot::{flatten_image, ImageRecord, Store};

use crate::error::{RunError, SpecError};
use crate::spec::{runtime_spec, RunOptions};

/// A container's id: 64 random hex characters, as Docker's; its first 12 are the default
/// hostname.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerId(String);

impl ContainerId {
    pub fn random() -> io::Result<ContainerId> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(ContainerId(
            bytes.iter().map(|b| format!("{b:02x}")).collect(),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 characters, as `docker ps` shows ids.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

/// `/etc/hosts` of a container: Docker's loopback block and its own hostname.
fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    )
}

/// Write `spec` as `dir/config.json` and the files it bind-mounts (`hostname`, `hosts`,
/// and the host's `resolv.conf`), after making `dir/rootfs` safe to hand to any runtime
/// ([`crate::handoff`]): its mount destinations real directories and files, its
/// working directory made inside it (0755 root), as Docker creates it.
pub fn write_bundle(dir: &Path, spec: &Spec) -> Result<(), SpecError> {
    let write = |name: &str, data: &[u8]| -> Result<(), SpecError> {
        let path = dir.join(name);
        let err = |source| SpecError::Bundle {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::File::create(&path).map_err(err)?;
        f.write_all(data).map_err(err)
    };
    let hostname = spec.hostname().clone().unwrap_or_default();
    write("hostname", format!("{hostname}\n").as_bytes())?;
    write("hosts", hosts(&hostname).as_bytes())?;
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    write("resolv.conf", &resolv)?;
    crate::handoff::secure_rootfs(&dir.join("rootfs"), dir, spec)?;
    let json = serde_json::to_vec_pretty(spec).map_err(SpecError::Spec)?;
    write("config.json", &json)
}

/// Write the stored `image` as a bundle in `dir`, which must not exist: `dir/rootfs`
/// flattened, `dir/config.json` for `run`, and the container's `/etc` files. Returns the
/// container id the spec was made for (its hostname is the id's first 12 characters
/// unless `run` names one). `stop` is asked between entries of the flattening (a
/// signal). On failure `dir` is removed.
pub fn bundle_image(
    store: &Store,
    image: &ImageRecord,
    dir: &Path,
    run: &RunOptions,
    stop: &dyn Fn() -> bool,
) -> Result<ContainerId, RunError> {
    let fail = |op: &'static str, source: io::Error| SpecError::BundleDir {
        op,
        path: dir.display().to_string(),
        source,
    };
    let config = store.image_config(image)?;
    std::fs::create_dir(dir).map_err(|e| fail("create bundle", e))?;
    let written = (|| {
        let rootfs = dir.join("rootfs");
        flatten_image(store, image, &rootfs, stop)?;
        let id = ContainerId::random().map_err(|e| fail("container id", e))?;
        let hostname = run
            .hostname
            .clone()
            .unwrap_or_else(|| id.short().to_string());
        let spec = runtime_spec(&config, &rootfs, run, &hostname)?;
        write_bundle(dir, &spec)?;
        Ok(id)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_differ() {
        let (a, b) = (
            ContainerId::random().unwrap(),
            ContainerId::random().unwrap(),
        );
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.short(), &a.as_str()[..12]);
        assert_ne!(a, b);
    }
}
