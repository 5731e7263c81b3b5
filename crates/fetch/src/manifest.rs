//! Manifests and indexes: fetching them with a size cap, checking their digests, refusing
//! schema 1, and walking an index down to the one image manifest for a platform.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use oci_spec::image::{ImageIndex, ImageManifest};
use rdpull_verify::Digest;

use crate::client::Registry;
use crate::error::FetchError;
use crate::http::{http_error, within};
use crate::options::Capability;
use crate::platform::Platform;
use crate::reference::Reference;

pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

/// What we ask registries for, most preferred first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Indexes may nest; real ones go one level deep.
pub const MAX_INDEX_DEPTH: usize = 4;

/// A blob named by a manifest: digest, size and media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobDescriptor {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// An image reference resolved to one platform's image manifest.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    pub reference: Reference,
    /// What the reference points at: an index or the manifest itself (`docker pull`'s Digest).
    pub target_digest: Digest,
    pub target_media_type: String,
    /// The index's bytes when the reference named one.
    pub index: Option<Bytes>,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub manifest: Bytes,
    pub config: BlobDescriptor,
    pub layers: Vec<BlobDescriptor>,
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Manifest,
    Index,
    Schema1,
}

/// What one manifest document says: an image (its config and layers), or the index entry
/// to follow for the platform.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Document {
    Image {
        config: BlobDescriptor,
        layers: Vec<BlobDescriptor>,
    },
    /// An index: the manifest chosen for the platform.
    Follow { digest: Digest, size: u64 },
}

/// Parse one fetched manifest or index (`bytes`, of `media_type` as
/// [`document_media_type`] decided it) for `platform`. Pure: no I/O, any bytes.
pub fn parse_document(
    bytes: &[u8],
    media_type: &str,
    digest: &Digest,
    reference: &Reference,
    platform: &Platform,
) -> Result<Document, FetchError> {
    match kind_of(bytes, media_type, reference)? {
        Kind::Schema1 => Err(FetchError::Schema1 {
            reference: reference.to_string(),
            media_type: media_type.to_string(),
        }),
        Kind::Manifest => {
            let what = format!("manifest {digest}");
            let m: ImageManifest = parse_json(&what, bytes)?;
            Ok(Document::Image {
                config: descriptor(&what, m.config())?,
                layers: m
                    .layers()
                    .iter()
                    .map(|d| descriptor(&what, d))
                    .collect::<Result<Vec<_>, _>>()?,
            })
        }
        Kind::Index => {
            let what = format!("index {digest}");
            let idx: ImageIndex = parse_json(&what, bytes)?;
            let child = choose_platform(&idx, platform, reference)?;
            Ok(Document::Follow {
                digest: parse_digest(&what, child.digest().as_ref())?,
                size: child.size(),
            })
        }
    }
}

/// Resolve `reference` to the image manifest for `platform`.
pub async fn resolve(
    reg: &Registry,
    reference: &Reference,
    platform: &Platform,
) -> Result<ResolvedImage, FetchError> {
    let top = fetch_manifest(reg, reference, reference.digest().map(|d| (d, None))).await?;
    let target_digest = top.digest.clone();
    let target_media_type = top.media_type.clone();
    let mut index = None;
    let mut current = top;
    for _ in 0..=MAX_INDEX_DEPTH {
        let c = &current;
        match parse_document(&c.bytes, &c.media_type, &c.digest, reference, platform)? {
            Document::Image { config, layers } => {
                return Ok(ResolvedImage {
                    reference: reference.clone(),
                    target_digest,
                    target_media_type,
                    index,
                    manifest_digest: current.digest,
                    manifest_media_type: current.media_type,
                    manifest: current.bytes,
                    config,
                    layers,
                });
            }
            Document::Follow { digest, size } => {
                if index.is_none() {
                    index = Some(current.bytes.clone());
                }
                let child_ref = reference.with_digest(digest.clone());
                current = fetch_manifest(reg, &child_ref, Some((&digest, Some(size)))).await?;
            }
        }
    }
    Err(FetchError::IndexTooDeep {
        reference: reference.to_string(),
        limit: MAX_INDEX_DEPTH,
    })
}

struct FetchedManifest {
    bytes: Bytes,
    media_type: String,
    digest: Digest,
}

/// GET a manifest with the size cap; verify it against `expected` (a by-digest pull or an
/// index entry) or, failing that, against the registry's `Docker-Content-Digest`.
async fn fetch_manifest(
    reg: &Registry,
    reference: &Reference,
    expected: Option<(&Digest, Option<u64>)>,
) -> Result<FetchedManifest, FetchError> {
    let what = format!("manifest {reference}");
    // A tag is resolved; a digest is content, which pull-only mirrors may serve.
    let need = if reference.digest().is_some() {
        Capability::Pull
    } else {
        Capability::Resolve
    };
    let path = format!(
        "{}/manifests/{}",
        reference.repository(),
        reference.manifest_reference()
    );
    let resp = reg
        .retrying(&what, || {
            reg.get(&what, &path, reference.repository(), Some(ACCEPT), need)
        })
        .await?;
    let header_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let limit = reg.options().max_manifest_size;
    let read = read_capped(resp, &what, reference, limit);
    let bytes = within(reg.options().request_timeout, &what, read).await?;
    let digest = manifest_digest(&bytes, &what, expected, header_digest)?;
    let media_type = document_media_type(&bytes, &what, header_type)?;
    Ok(FetchedManifest {
        bytes,
        media_type,
        digest,
    })
}

/// The whole body, refused as soon as it is known to exceed `limit` bytes.
async fn read_capped(
    resp: reqwest::Response,
    what: &str,
    reference: &Reference,
    limit: u64,
) -> Result<Bytes, FetchError> {
    let too_large = |size| FetchError::ManifestTooLarge {
        reference: reference.to_string(),
        limit,
        size,
    };
    if let Some(len) = resp.content_length() {
        if len > limit {
            return Err(too_large(Some(len)));
        }
    }
    let url = resp.url().to_string();
    let mut body = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| http_error(what, &url, e))?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(None));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The manifest's digest, checked against what we expected (and its size), else against
/// what the registry claimed, else computed.
fn manifest_digest(
    bytes: &[u8],
    what: &str,
    expected: Option<(&Digest, Option<u64>)>,
    claimed: Option<Digest>,
) -> Result<Digest, FetchError> {
    let verify = |want: &Digest| {
        want.verify(bytes).map_err(|source| FetchError::Verify {
            what: what.to_string(),
            source,
        })
    };
    match (expected, claimed) {
        (Some((want, size)), _) => {
            if let Some(size) = size.filter(|&s| s != bytes.len() as u64) {
                return Err(FetchError::Verify {
                    what: what.to_string(),
                    source: rdpull_verify::VerifyError::Size {
                        expected: size,
                        actual: bytes.len() as u64,
                    },
                });
            }
            verify(want)?;
            Ok(want.clone())
        }
        (None, Some(claimed)) => {
            verify(&claimed)?;
            Ok(claimed)
        }
        (None, None) => Ok(Digest::sha256_of(bytes)),
    }
}

/// A manifest document's media type: the JSON's own `mediaType` wins over a generic
/// Content-Type (`header_type`). Pure: no I/O, any bytes.
pub fn document_media_type(
    bytes: &[u8],
    what: &str,
    header_type: String,
) -> Result<String, FetchError> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "schemaVersion", default)]
        schema_version: u32,
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
    }
    let head: Head = parse_json(what, bytes)?;
    Ok(match head.media_type {
        Some(m) if !m.is_empty() => m,
        _ if !header_type.is_empty() && header_type != "application/json" => header_type,
        _ if head.schema_version == 1 => media::DOCKER_SCHEMA1.to_string(),
        _ => header_type,
    })
}

fn kind_of(bytes: &[u8], media_type: &str, reference: &Reference) -> Result<Kind, FetchError> {
    Ok(match media_type {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => Kind::Manifest,
        media::OCI_INDEX | media::DOCKER_LIST => Kind::Index,
        media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED => Kind::Schema1,
        // No mediaType anywhere (allowed for OCI): tell by shape.
        "" | "application/json" => {
            #[derive(serde::Deserialize)]
            struct Shape {
                manifests: Option<serde_json::Value>,
                layers: Option<serde_json::Value>,
            }
            let s: Shape = parse_json("manifest", bytes)?;
            match (s.manifests, s.layers) {
                (Some(_), None) => Kind::Index,
                (None, Some(_)) => Kind::Manifest,
                _ => {
                    return Err(FetchError::UnsupportedMediaType {
                        reference: reference.to_string(),
                        media_type: media_type.to_string(),
                    })
                }
            }
        }
        other => {
            return Err(FetchError::UnsupportedMediaType {
                reference: reference.to_string(),
                media_type: other.to_string(),
            })
        }
    })
}

fn choose_platform<'a>(
    idx: &'a ImageIndex,
    want: &Platform,
    reference: &Reference,
) -> Result<&'a oci_spec::image::Descriptor, FetchError> {
    let candidates = idx.manifests().iter().filter(|d| {
        d.platform().as_ref().is_some_and(|p| {
            want.matches(
                &p.os().to_string(),
                &p.architecture().to_string(),
                p.variant().as_deref(),
            )
        })
    });
    // Exact variant match first, then anything the matcher accepted, in index order.
    let mut best = None;
    for d in candidates {
        let exact = d.platform().as_ref().and_then(|p| p.variant().clone()) == want.variant;
        if exact {
            return Ok(d);
        }
        best.get_or_insert(d);
    }
    best.ok_or_else(|| FetchError::NoMatchingPlatform {
        reference: reference.to_string(),
        platform: want.to_string(),
        available: idx
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| {
                let mut s = format!("{}/{}", p.os(), p.architecture());
                if let Some(v) = p.variant() {
                    s = format!("{s}/{v}");
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn descriptor(what: &str, d: &oci_spec::image::Descriptor) -> Result<BlobDescriptor, FetchError> {
    Ok(BlobDescriptor {
        digest: parse_digest(what, d.digest().as_ref())?,
        size: d.size(),
        media_type: d.media_type().to_string(),
    })
}

fn parse_digest(what: &str, s: &str) -> Result<Digest, FetchError> {
    s.parse().map_err(|source| FetchError::Verify {
        what: what.to_string(),
        source,
    })
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, FetchError> {
    serde_json::from_slice(bytes).map_err(|source| FetchError::Json {
        what: what.to_string(),
        source,
    })
}
