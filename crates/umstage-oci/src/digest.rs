//! Content digests: hashing streams into `sha256:…` (or `sha512:…`) digests and checking them.

use std::io::{self, Read, Write};

pub use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::Digest as _;

/// A digest was malformed or uses an algorithm umstage cannot compute.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The text is not a valid `algorithm:hex` digest.
    #[error("invalid digest {text:?}: {reason}")]
    Invalid {
        /// The rejected text.
        text: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The algorithm is neither sha256 nor sha512.
    #[error("unsupported digest algorithm in {0} (only sha256 and sha512 are supported)")]
    UnsupportedAlgorithm(String),
}

/// Parses `text` as a digest whose algorithm umstage can verify (sha256 or sha512).
pub fn parse(text: &str) -> Result<Digest, DigestError> {
    let digest: Digest =
        text.parse()
            .map_err(|e: oci_spec::OciSpecError| DigestError::Invalid {
                text: text.to_owned(),
                reason: e.to_string(),
            })?;
    Hasher::for_digest(&digest)?;
    Ok(digest)
}

/// An incremental hasher for one of the supported digest algorithms.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256, the default for everything umstage writes.
    Sha256(sha2::Sha256),
    /// SHA-512, accepted when reading.
    Sha512(sha2::Sha512),
}

impl Default for Hasher {
    fn default() -> Self {
        Self::sha256()
    }
}

impl Hasher {
    /// A new SHA-256 hasher.
    pub fn sha256() -> Self {
        Self::Sha256(sha2::Sha256::new())
    }

    /// A new hasher using the algorithm of `digest`, so the result can be compared with it.
    pub fn for_digest(digest: &Digest) -> Result<Self, DigestError> {
        match digest.algorithm() {
            DigestAlgorithm::Sha256 => Ok(Self::sha256()),
            DigestAlgorithm::Sha512 => Ok(Self::Sha512(sha2::Sha512::new())),
            _ => Err(DigestError::UnsupportedAlgorithm(digest.to_string())),
        }
    }

    /// Feeds bytes to the hasher.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Self::Sha256(h) => ("sha256", hex(&h.finalize())),
            Self::Sha512(h) => ("sha512", hex(&h.finalize())),
        };
        // A hex string of the right length always forms a valid digest.
        #[allow(clippy::expect_used)]
        format!("{algorithm}:{hex}")
            .parse()
            .expect("hash output is a valid digest")
    }
}

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    let mut hasher = Hasher::sha256();
    hasher.update(bytes);
    hasher.finish()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// A writer that hashes and counts everything passing through it to an inner writer.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`, hashing with SHA-256.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::sha256(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Returns the inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`, hashing with `hasher`.
    pub fn new(inner: R, hasher: Hasher) -> Self {
        Self {
            inner,
            hasher,
            read: 0,
        }
    }

    /// Returns the digest and byte count of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input_is_the_well_known_value() {
        assert_eq!(
            sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_refuses_bad_digests() {
        assert!(parse("sha256:abc").is_err());
        assert!(parse("md5:d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(
            parse("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855")
                .is_err()
        );
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert_eq!(parse(&sha512).map(|d| d.to_string()).ok(), Some(sha512));
    }

    #[test]
    fn hashing_writer_matches_one_shot_hash() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ")
            .and_then(|()| w.write_all(b"world"))
            .ok();
        let (out, digest, n) = w.finish();
        assert_eq!(out, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(digest, sha256(b"hello world"));
    }
}
