//! Layer compression, chosen from the descriptor's media type.

use std::io::{self, BufRead, Read};

use crate::error::UnpackError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type, OCI or Docker. Non-distributable ("foreign")
    /// variants decompress the same way.
    pub fn from_media_type(media_type: &str) -> Result<Compression, UnpackError> {
        Ok(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
            other => return Err(UnpackError::UnsupportedMediaType(other.to_string())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// A decompressing reader that can hand back its input (to finish hashing it).
#[non_exhaustive]
pub enum Decoder<R: BufRead> {
    Plain(R),
    // Multi-member, as Go's gzip reader (containerd, Docker) reads layers.
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decoder<R> {
    pub fn new(compression: Compression, input: R) -> io::Result<Decoder<R>> {
        Ok(match compression {
            Compression::None => Decoder::Plain(input),
            Compression::Gzip => {
                Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
            }
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(input)?),
        })
    }

    pub fn into_inner(self) -> R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        use Compression::*;
        for (m, c) in [
            ("application/vnd.oci.image.layer.v1.tar", None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Zstd),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Gzip),
            ("application/vnd.docker.image.rootfs.diff.tar", None),
        ] {
            assert_eq!(Compression::from_media_type(m).unwrap(), c, "{m}");
        }
        let e = Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+bzip2");
        assert_eq!(
            e.unwrap_err().to_string(),
            "unsupported layer media type \"application/vnd.oci.image.layer.v1.tar+bzip2\""
        );
    }
}
