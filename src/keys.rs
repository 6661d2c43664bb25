//! API keys: who is calling. Keys are kept only as SHA-256 digests and compared in
//! constant time against every configured key, so neither the content nor the length
//! of a key leaks through timing. Which routes need a key, and what a caller may see, is
//! decided by the routes (`routes/middleware/auth.rs`, `routes/extract.rs`).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Which configured key a caller presented (its place in the configuration). Sessions
/// belong to the key that created them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub usize);

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
        for (i, known) in self.digests.iter().enumerate() {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(KeyId(i));
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
        assert_eq!(api_keys.identify("key-a"), Some(KeyId(0)));
        assert_eq!(api_keys.identify("key-b"), Some(KeyId(1)));
        assert_eq!(api_keys.identify("key-"), None);
        assert_eq!(api_keys.identify("key-aa"), None);
        assert_eq!(api_keys.identify(""), None);
        assert!(!ApiKeys::default().enabled());
    }
}
