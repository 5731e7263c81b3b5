//! Streaming digest verification for OCI content.
//!
//! This crate owns the [`Digest`] type (`algorithm:hex`, as the OCI image spec defines it)
//! and the streaming machinery that checks bytes against one while they flow: a
//! [`HashingReader`] hashes and counts what passes through it and refuses to read past a
//! declared size, so a blob's digest and size are known the moment its last byte has
//! been consumed, without a second pass or a copy on disk. It verifies registry digests
//! (sha256, sha512) and DiffIDs; it does not fetch, decompress or store anything.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm rdpull can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// A content digest such as `sha256:6c3c…`. Always validated: known algorithm, exact
/// length, lowercase hex (the OCI spec's registered algorithms allow nothing else).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, without the `algorithm:` prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finish()
    }

    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }

    /// Check `data` against this digest.
    pub fn verify(&self, data: &[u8]) -> Result<(), VerifyError> {
        let actual = Digest::of(self.algorithm, data);
        if actual == *self {
            Ok(())
        } else {
            Err(VerifyError::Mismatch {
                expected: self.clone(),
                actual,
            })
        }
    }

    /// The first 12 hex characters, as `docker pull` shows layer ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = VerifyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| VerifyError::InvalidDigest {
            digest: s.chars().take(200).collect(),
            why: why.to_string(),
        };
        let (alg, hex) = s.split_once(':').ok_or_else(|| invalid("no ':'"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("unsupported algorithm")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid("wrong length"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("not lowercase hex"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hash for one [`Algorithm`].
#[derive(Clone)]
#[non_exhaustive]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

/// What a verification found wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The content hashes to another digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Mismatch { expected: Digest, actual: Digest },
    /// The content has another length than declared.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size { expected: u64, actual: u64 },
    /// The stream offered more than its declared size (reading stopped there).
    #[error("more than the declared {limit} bytes")]
    TooLong { limit: u64 },
    /// A digest string that is not `algorithm:hex` of a supported algorithm.
    #[error("invalid digest {digest:?}: {why}")]
    InvalidDigest { digest: String, why: String },
}

/// A reader that hashes and counts every byte read through it.
///
/// With a limit, reading past `limit` bytes fails with [`VerifyError::TooLong`] (wrapped in
/// an `io::Error`), so a server sending more than a descriptor's size cannot make us read
/// without bound.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
    limit: Option<u64>,
    exceeded: bool,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: algorithm.hasher(),
            count: 0,
            limit: None,
            exceeded: false,
        }
    }

    /// Fail any read that would go beyond `limit` bytes in total.
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Did the inner reader offer more than the limit?
    pub fn exceeded_limit(&self) -> bool {
        self.exceeded
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Read and hash whatever is left, up to the end of the inner reader.
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }

    /// The inner reader, and the digest and length of everything read so far.
    pub fn into_parts(self) -> (R, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }

    /// The digest and length of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.count)
    }

    /// Check what was read against an expected digest and, if given, size.
    pub fn verify(self, expected: &Digest, size: Option<u64>) -> Result<(), VerifyError> {
        let algorithm = expected.algorithm();
        if algorithm != self.algorithm() {
            // Caller bug: the hasher must be created with the expected algorithm.
            panic!("HashingReader algorithm differs from the digest to verify");
        }
        let (actual, count) = self.finish();
        if let Some(size) = size {
            if count != size {
                return Err(VerifyError::Size {
                    expected: size,
                    actual: count,
                });
            }
        }
        if actual != *expected {
            return Err(VerifyError::Mismatch {
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }

    fn algorithm(&self) -> Algorithm {
        match self.hasher {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = match self.limit {
            // Ask for one byte past the limit so an over-long stream is noticed.
            Some(limit) => buf.len().min((limit - self.count + 1) as usize),
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..want])?;
        if let Some(limit) = self.limit {
            if self.count + n as u64 > limit {
                self.exceeded = true;
                return Err(io::Error::other(VerifyError::TooLong { limit }));
            }
        }
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The [`VerifyError`] inside an `io::Error` made by a [`HashingReader`], if it is one.
pub fn verify_error(e: &io::Error) -> Option<&VerifyError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<VerifyError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:../../../../etc/passwd",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} accepted");
        }
        let e = "md5:x".parse::<Digest>().unwrap_err().to_string();
        assert_eq!(e, "invalid digest \"md5:x\": unsupported algorithm");
    }

    #[test]
    fn sha512_known_answer() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(d.to_string(), "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
        assert!(d.verify(b"abc").is_ok());
        assert!(d.verify(b"abd").is_err());
    }

    #[test]
    fn hashing_reader_verifies_digest_and_size() {
        let data = vec![7u8; 100_000];
        let want = Digest::sha256_of(&data);
        let mut r = HashingReader::new(&data[..], Algorithm::Sha256).with_limit(100_000);
        r.drain().unwrap();
        r.verify(&want, Some(100_000)).unwrap();

        let mut r = HashingReader::new(&data[..99_999], Algorithm::Sha256);
        r.drain().unwrap();
        match r.verify(&want, Some(100_000)) {
            Err(VerifyError::Size {
                expected: 100_000,
                actual: 99_999,
            }) => {}
            other => panic!("{other:?}"),
        }

        let mut r = HashingReader::new(&b"other"[..], Algorithm::Sha256);
        r.drain().unwrap();
        let e = r.verify(&want, None).unwrap_err().to_string();
        assert!(e.starts_with(&format!("digest mismatch: expected {want}, got sha256:")));
    }

    #[test]
    fn hashing_reader_refuses_to_read_past_limit() {
        let data = [1u8; 10];
        let mut r = HashingReader::new(&data[..], Algorithm::Sha256).with_limit(9);
        let e = r.drain().unwrap_err();
        assert!(matches!(
            verify_error(&e),
            Some(VerifyError::TooLong { limit: 9 })
        ));
        // Exactly at the limit is fine.
        let mut r = HashingReader::new(&data[..], Algorithm::Sha256).with_limit(10);
        assert_eq!(r.drain().unwrap(), 10);
    }
}
