//! `save`: an image as an OCI image layout in a tar archive, which `skopeo copy
//! oci-archive:` and `podman load` read: `oci-layout`, an `index.json` naming the image,
//! and its manifest, config and kept layer blobs under `blobs/<algorithm>/<hex>`.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use rdpull_verify::{Digest, HashingReader};

use crate::error::{io_err, StoreError};
use crate::record::ImageRecord;
use crate::store::Store;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl Store {
    /// Write `image` to `out` as an OCI image layout tar. Every layer blob must be kept
    /// (`--keep-blobs`); each is checked against its digest as it is copied.
    pub fn save(&self, image: &ImageRecord, out: &mut impl Write) -> Result<(), StoreError> {
        let manifest = self.blob(&image.manifest_digest)?;
        let config = self.blob(&image.config_digest)?;
        let mut layers = Vec::new();
        for l in &image.layers {
            match self.kept_blob(&l.digest, l.size)? {
                Some(file) => layers.push((l, file)),
                None => return Err(StoreError::NotKept(l.digest.to_string())),
            }
        }
        let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|m| m["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| OCI_MANIFEST.to_string());
        let index = index_json(image, &media_type, manifest.len());
        let mut tar = TarWriter { out };
        let werr = |e: io::Error| io_err("output")(e);
        tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(werr)?;
        tar.file("index.json", index.as_bytes()).map_err(werr)?;
        let mut written = HashSet::new();
        for (digest, bytes) in [
            (&image.manifest_digest, manifest),
            (&image.config_digest, config),
        ] {
            if written.insert(digest.clone()) {
                tar.file(&blob_name(digest), &bytes).map_err(werr)?;
            }
        }
        for (layer, file) in layers {
            if !written.insert(layer.digest.clone()) {
                continue;
            }
            let mut reader = HashingReader::new(file, layer.digest.algorithm());
            tar.stream(&blob_name(&layer.digest), layer.size, &mut reader)
                .map_err(werr)?;
            reader
                .verify(&layer.digest, Some(layer.size))
                .map_err(|source| StoreError::Blob {
                    digest: layer.digest.to_string(),
                    source,
                })?;
        }
        tar.finish().map_err(werr)
    }
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

/// The layout's index: the image's manifest, named as containerd's export names it (the
/// tag as `org.opencontainers.image.ref.name`, the whole name as `io.containerd.image.name`).
fn index_json(image: &ImageRecord, media_type: &str, size: usize) -> String {
    let mut annotations = serde_json::Map::new();
    annotations.insert("io.containerd.image.name".into(), image.name.clone().into());
    if let Some(tag) = tag_of(&image.name) {
        annotations.insert("org.opencontainers.image.ref.name".into(), tag.into());
    }
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": media_type,
            "digest": image.manifest_digest.to_string(),
            "size": size,
            "annotations": annotations,
        }],
    })
    .to_string()
}

/// The tag of a normalised reference (`host/repo:tag`), if it has one and no digest.
fn tag_of(name: &str) -> Option<&str> {
    if name.contains('@') {
        return None;
    }
    let last = name.rsplit('/').next()?;
    last.split_once(':').map(|(_, tag)| tag)
}

/// A ustar archive of regular files, all owned by 0:0, mode 0644, mtime 0.
struct TarWriter<'a, W> {
    out: &'a mut W,
}

impl<W: Write> TarWriter<'_, W> {
    fn file(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.stream(name, data.len() as u64, &mut &data[..])
    }

    /// An entry of `size` bytes read from `data`, which must hold exactly that many.
    fn stream(&mut self, name: &str, size: u64, data: &mut impl Read) -> io::Result<()> {
        self.out.write_all(&header(name, size))?;
        let copied = io::copy(&mut data.take(size), self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: {copied} of {size} bytes"),
            ));
        }
        let pad = (512 - size % 512) % 512;
        self.out.write_all(&[0; 512][..pad as usize])
    }

    fn finish(self) -> io::Result<()> {
        self.out.write_all(&[0; 1024])?;
        self.out.flush()
    }
}

fn header(name: &str, size: u64) -> [u8; 512] {
    assert!(name.len() <= 100, "layout names are short");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    if size < 1 << 33 {
        octal(&mut h[124..136], size);
    } else {
        // GNU base-256 for 8 GiB and more.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h
}

/// `v` in octal, zero-padded, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_names() {
        assert_eq!(tag_of("127.0.0.1:5000/debian:bookworm"), Some("bookworm"));
        assert_eq!(tag_of("docker.io/library/centos:latest"), Some("latest"));
        assert_eq!(tag_of("127.0.0.1:5000/app@sha256:00"), None);
        assert_eq!(tag_of("127.0.0.1:5000/app"), None);
    }

    #[test]
    fn the_archive_reads_back_with_tar_rs() {
        let mut out = Vec::new();
        let mut t = TarWriter { out: &mut out };
        t.file("oci-layout", b"{}").unwrap();
        t.stream("blobs/sha256/ab", 3, &mut &b"xyz"[..]).unwrap();
        assert!(t.stream("short", 5, &mut &b"ab"[..]).is_err());
        let mut out2 = Vec::new();
        let mut t = TarWriter { out: &mut out2 };
        t.file("oci-layout", b"{}").unwrap();
        t.stream("blobs/sha256/ab", 3, &mut &b"xyz"[..]).unwrap();
        t.finish().unwrap();
        let mut archive = tar::Archive::new(&out2[..]);
        let entries: Vec<(String, Vec<u8>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.path().unwrap().display().to_string(), data)
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("oci-layout".to_string(), b"{}".to_vec()),
                ("blobs/sha256/ab".to_string(), b"xyz".to_vec())
            ]
        );
        let mut big = [0u8; 512];
        big.copy_from_slice(&header("big", 10 << 30));
        let h = tar::Header::from_byte_slice(&big);
        assert_eq!(h.size().unwrap(), 10 << 30);
        assert!(h.as_ustar().is_some());
    }
}
