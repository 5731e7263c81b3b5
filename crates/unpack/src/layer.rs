//! One layer from compressed bytes to a verified directory, in a single pass.

use std::cell::RefCell;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use rdpull_verify::{Digest, HashingReader, VerifyError};

use crate::apply::{apply_tar, LayerStats};
use crate::compression::{Compression, Decoder};
use crate::error::UnpackError;
use crate::options::ApplyOptions;
use crate::pipe::{pipe, PumpError};

/// Read-ahead between the compressed hash and the decompressor.
const INPUT_BUF: usize = 256 << 10;
/// Decompressed buffers in flight between the two threads of a layer, and their size:
/// 1 MiB per layer, the smallest that keeps both threads busy (docs/performance.md).
const PIPE_DEPTH: usize = 4;
const PIPE_BUFFER: usize = 256 << 10;

/// What the manifest and config say a layer is.
#[derive(Clone, Debug)]
pub struct LayerDescriptor<'a> {
    pub digest: &'a Digest,
    pub size: u64,
    pub media_type: &'a str,
    /// The config's `rootfs.diff_ids` entry for this layer.
    pub diff_id: &'a Digest,
}

/// Keeps the first error a reader returned, so the stage that failed can be named (with
/// its typed error) even after a failure has passed through the stages above it.
struct ErrorTap<R> {
    inner: R,
    first: Rc<RefCell<Option<io::Error>>>,
}

impl<R> ErrorTap<R> {
    fn new(inner: R) -> (Self, Rc<RefCell<Option<io::Error>>>) {
        let first = Rc::new(RefCell::new(None));
        (
            ErrorTap {
                inner,
                first: first.clone(),
            },
            first,
        )
    }
}

impl<R: Read> Read for ErrorTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                return e;
            }
            // The stages above see a stand-in of the same kind; the original is reported.
            let stand_in = io::Error::new(e.kind(), e.to_string());
            self.first.borrow_mut().get_or_insert(e);
            stand_in
        })
    }
}

/// Unpack the compressed layer `blob` into the existing directory `dir`, verifying the
/// blob's size and digest and the DiffID of the tar stream as the bytes flow.
///
/// On error the directory holds a partial layer; the caller discards it. When several
/// things are wrong, the most basic one is reported: a failed download, then a wrong blob
/// (size or digest), then bad compressed data, then bad tar data, then a wrong DiffID.
pub fn unpack_layer<R: Read>(
    blob: R,
    layer: &LayerDescriptor<'_>,
    dir: &Path,
    options: &ApplyOptions,
) -> Result<LayerStats, UnpackError> {
    let compression = Compression::from_media_type(layer.media_type)?;
    let (source, source_failed) = ErrorTap::new(blob);
    let compressed = HashingReader::new(source, layer.digest.algorithm()).with_limit(layer.size);
    let input = BufReader::with_capacity(INPUT_BUF, compressed);
    let decoder = Decoder::new(compression, input).map_err(|source| UnpackError::Decompress {
        compression: compression.name(),
        source,
    })?;

    // Two threads per layer: this one hashes the blob, decompresses and hashes the tar
    // stream; the other applies it. In series they were one core's work, and the split
    // that balances them best was measured (docs/performance.md).
    let mut tar = HashingReader::new(decoder, layer.diff_id.algorithm());
    let (writer, mut reader) = pipe(PIPE_DEPTH, PIPE_BUFFER);
    let (pumped, applied) = std::thread::scope(|s| {
        let applier = std::thread::Builder::new()
            .name("rdpull-apply".into())
            .spawn_scoped(s, move || {
                let applied = apply_tar(&mut reader, dir, options);
                // The tar end marker is not the end of the stream: padding follows, and
                // the DiffID covers every byte.
                let drained = match applied {
                    Ok(_) => io::copy(&mut reader, &mut io::sink()).map(|_| ()),
                    Err(_) => Ok(()),
                };
                (applied, drained)
            });
        let pumped = writer.pump(&mut tar);
        drop(writer);
        let applied = applier.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        (pumped, applied)
    });
    let (applied, drained) = applied.map_err(|source| UnpackError::Root {
        path: dir.display().to_string(),
        source,
    })?;
    let (decoder, diff_id, _) = tar.into_parts();
    // Buffered-but-unread input was hashed already: the hash sits below the buffer.
    let mut compressed = decoder.into_inner().into_inner();
    let rest = compressed.drain();

    if let Some(source) = source_failed.borrow_mut().take() {
        return Err(UnpackError::Source(source));
    }
    if compressed.exceeded_limit() {
        return Err(UnpackError::Blob(VerifyError::TooLong {
            limit: layer.size,
        }));
    }
    rest.map_err(UnpackError::Source)?;
    compressed
        .verify(layer.digest, Some(layer.size))
        .map_err(UnpackError::Blob)?;
    if let Err(PumpError::Read(source)) = pumped {
        return Err(UnpackError::Decompress {
            compression: compression.name(),
            source,
        });
    }
    let stats = applied?;
    drained.map_err(UnpackError::Tar)?;
    if diff_id != *layer.diff_id {
        return Err(UnpackError::DiffId(VerifyError::Mismatch {
            expected: layer.diff_id.clone(),
            actual: diff_id,
        }));
    }
    Ok(stats)
}
