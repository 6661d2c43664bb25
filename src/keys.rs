//! API keys: who is calling. Keys are kept only as SHA-256 digests and compared in
//! constant time against every configured key, so neither the content nor the length
//! of a key leaks through timing. Which routes need a key, and what a caller may see, is
//! decided by the routes (`routes/middleware/auth.rs`, `routes/extract.rs`).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Which configured key a caller presented: the SHA-256 digest of the key, so that it
/// stays the same when keys are added or reordered and can be stored. Sessions belong to
/// the key that created them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &str) -> Self {
        Self(digest(key))
    }

    /// The id a store kept as hex (`to_hex`).
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Self(digest))
    }

    /// The digest as lowercase hex, as the store keeps it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for KeyId {
    /// The first bytes of the digest only: enough to tell keys apart in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({}…)", &self.to_hex()[..8])
    }
}

/// Who is calling: a key, or anyone when no keys are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Caller(pub Option<KeyId>);

/// The configured API keys; empty means the service is open (local use only).
#[derive(Debug, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a Secret>) -> Self {
        Self {
            digests: keys.into_iter().map(|key| digest(key.expose())).collect(),
        }
    }

    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// The key `presented` is, if any. Every configured key is compared, each in
    /// constant time over fixed-length digests.
    pub fn identify(&self, presented: &str) -> Option<KeyId> {
        let presented = digest(presented);
        let mut found = None;
        for known in &self.digests {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(KeyId(*known));
            }
        }
        found
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_each_configured_key_and_nothing_else() {
        let keys = [Secret::new("key-a"), Secret::new("key-b")];
        let api_keys = ApiKeys::new(&keys);
        assert!(api_keys.enabled());
        assert_eq!(api_keys.identify("key-a"), Some(KeyId::of("key-a")));
        assert_eq!(api_keys.identify("key-b"), Some(KeyId::of("key-b")));
        assert_eq!(KeyId::of("key-a").to_hex().len(), 64);
        let id = KeyId::of("key-a");
        assert_eq!(KeyId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(KeyId::from_hex("zz"), None);
        assert_eq!(api_keys.identify("key-"), None);
        assert_eq!(api_keys.identify("key-aa"), None);
        assert_eq!(api_keys.identify(""), None);
        assert!(!ApiKeys::default().enabled());
    }
}
