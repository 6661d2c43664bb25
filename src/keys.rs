//! API keys: who is calling. Keys are kept only as SHA-256 digests and compared in
//! constant time against every configured key, so neither the content nor the length
//! of a key leaks through timing. Which routes need a key, and what a caller may see, is
//! decided by the routes (`routes/middleware/auth.rs`, `routes/extract.rs`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

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
    pub fn from_hex(text: &str) -> Option<Self> {
        unhex(text)?.try_into().ok().map(Self)
    }

    /// The digest as lowercase hex, as the store keeps it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
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
#[derive(Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
    /// Signs events tokens: derived from the keys themselves, so every process given
    /// the same keys accepts the others' tokens, and none outlives the key set.
    token_key: [u8; 32],
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.digests.len())
            .finish_non_exhaustive()
    }
}

/// What a valid events token grants: reading the events of `session` as `caller`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsGrant {
    pub session: Uuid,
    pub caller: Caller,
}

type HmacSha256 = Hmac<Sha256>;

/// The first part of every events token: its format.
const TOKEN_FORMAT: &str = "et1";

impl ApiKeys {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut keys: Vec<&Secret> = keys.into_iter().collect();
        // In one order, so that processes given the keys in another agree.
        keys.sort_by(|a, b| a.expose().cmp(b.expose()));
        let mut token_key = Sha256::new();
        token_key.update(b"text-session-api events token\0");
        for key in &keys {
            token_key.update(key.expose().as_bytes());
            token_key.update(b"\0");
        }
        Self {
            digests: keys.iter().map(|key| digest(key.expose())).collect(),
            token_key: token_key.finalize().into(),
        }
    }

    /// A token that lets a browser's `EventSource` (which cannot send `Authorization`)
    /// read the events of `session` as `caller` (`?access_token=`), until `expires`
    /// (Unix seconds): `et1.<session>.<expires>.<owner or ->.<signature>`.
    pub fn events_token(&self, session: Uuid, caller: Caller, expires: u64) -> String {
        let owner = caller.0.map_or_else(|| "-".to_owned(), |key| key.to_hex());
        let claims = format!("{TOKEN_FORMAT}.{session}.{expires}.{owner}");
        let signature = hex(&self.sign(&claims));
        format!("{claims}.{signature}")
    }

    /// What `token` grants, if it is one of ours and `now` (Unix seconds) is before its
    /// expiry. The signature is compared in constant time.
    pub fn check_events_token(&self, token: &str, now: u64) -> Option<EventsGrant> {
        let (claims, signature) = token.rsplit_once('.')?;
        let mut parts = claims.split('.');
        let (format, session, expires, owner) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if format != TOKEN_FORMAT || parts.next().is_some() {
            return None;
        }
        let expected = self.sign(claims);
        let given = unhex(signature)?;
        if !bool::from(expected.as_slice().ct_eq(given.as_slice())) {
            return None;
        }
        if expires.parse::<u64>().ok()? <= now {
            return None;
        }
        let caller = match owner {
            "-" => Caller(None),
            hex => Caller(Some(KeyId::from_hex(hex)?)),
        };
        Some(EventsGrant {
            session: Uuid::parse_str(session).ok()?,
            caller,
        })
    }

    fn sign(&self, claims: &str) -> [u8; 32] {
        // HMAC takes a key of any length.
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.token_key) else {
            return [0; 32];
        };
        mac.update(claims.as_bytes());
        mac.finalize().into_bytes().into()
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

/// Bytes as lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex (either case) as bytes; `None` if it is not hex.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.is_ascii() || !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
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

    #[test]
    fn an_events_token_grants_its_session_to_its_caller_until_it_expires() {
        let keys = ApiKeys::new(&[Secret::new("key-a")]);
        let session = Uuid::new_v4();
        let caller = Caller(Some(KeyId::of("key-a")));
        let token = keys.events_token(session, caller, 1_000);
        assert_eq!(
            keys.check_events_token(&token, 999),
            Some(EventsGrant { session, caller })
        );
        assert_eq!(keys.check_events_token(&token, 1_000), None, "expired");
        // Another key set (a key rotated out) does not accept it.
        let other = ApiKeys::new(&[Secret::new("key-b")]);
        assert_eq!(other.check_events_token(&token, 999), None);
        // Any change to what it says breaks the signature.
        let forged = token.replacen(".1000.", ".9999.", 1);
        assert_eq!(keys.check_events_token(&forged, 999), None);
        let (claims, _) = token.rsplit_once('.').unwrap();
        assert_eq!(keys.check_events_token(&format!("{claims}.00"), 999), None);
        assert_eq!(keys.check_events_token("et1.x", 0), None);
        let open = keys.events_token(session, Caller(None), 1_000);
        assert_eq!(
            keys.check_events_token(&open, 0).unwrap().caller,
            Caller(None)
        );
    }
}
