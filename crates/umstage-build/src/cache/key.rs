//! Cache keys: the sha256 of everything a step's result depends on, built from typed,
//! length-prefixed fields.

use std::fmt;

use sha2::{Digest, Sha256};

/// A content-addressed cache key: the sha256 of everything a step's result depends on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits back into a key.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(CacheKey(bytes))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Builds a cache key from typed, length-prefixed fields, so that no two different field
/// sequences hash alike (`"ab","c"` differs from `"a","bc"`).
#[derive(Clone)]
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// Starts a key for a kind of step (`"run"`, `"copy"`, …), versioned with the cache format.
    pub fn new(kind: &str) -> Self {
        let mut b = KeyBuilder(Sha256::new());
        b.str("umstage-cache-v1");
        b.str(kind);
        b
    }

    /// Adds a string field.
    pub fn str(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    /// Adds a byte-string field.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    /// Adds a number field.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.0.update([8u8]);
        self.0.update(value.to_le_bytes());
        self
    }

    /// Adds another key (a parent step, a source stage).
    pub fn key(&mut self, key: &CacheKey) -> &mut Self {
        self.bytes(&key.0)
    }

    /// Adds an optional string field; `None` and `Some("")` differ.
    pub fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            None => self.u64(0),
            Some(v) => self.u64(1).str(v),
        }
    }

    /// The finished key.
    pub fn finish(&self) -> CacheKey {
        CacheKey(self.0.clone().finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed() {
        let a = KeyBuilder::new("t").str("ab").str("c").finish();
        let b = KeyBuilder::new("t").str("a").str("bc").finish();
        assert_ne!(a, b);
        let c = KeyBuilder::new("t").opt_str(None).finish();
        let d = KeyBuilder::new("t").opt_str(Some("")).finish();
        assert_ne!(c, d);
        assert_eq!(a, KeyBuilder::new("t").str("ab").str("c").finish());
        assert_eq!(CacheKey::from_hex(&a.to_hex()), Some(a));
    }
}
