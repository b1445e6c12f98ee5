//! The Secret that holds the speakers' heartbeat keys: its name, its layout, and how a fresh
//! one is made. The controller creates it; the speakers read it.
//!
//! Layout of `data`:
//! - `key-<id>` (id 1 to 65535): a key, at least 32 random bytes. Every key present is accepted
//!   on receipt, so a new key can be added before anyone signs with it.
//! - `active`: the id (decimal) that speakers sign with.
//!
//! Rotation without a gap: add `key-<n+1>`, wait until every speaker has loaded it, set
//! `active` to n+1, then remove `key-<n>`.

use std::collections::BTreeMap;

use ring::rand::{SecureRandom, SystemRandom};

pub const SECRET_NAME: &str = "ferrolb-heartbeat-key";
pub const ACTIVE_ENTRY: &str = "active";
pub const KEY_ENTRY_PREFIX: &str = "key-";
/// Bytes of a key the controller generates; also the least a key may have (HMAC-SHA-256's
/// output length, RFC 2104's recommended minimum).
pub const KEY_LEN: usize = 32;

#[derive(Clone, PartialEq, Eq)]
pub struct HeartbeatKeys {
    pub active: u16,
    pub keys: BTreeMap<u16, Vec<u8>>,
    /// Entries that are neither `active` nor `key-<id>`: ignored, and worth a log line.
    pub ignored: Vec<String>,
}

// Never print key material.
impl std::fmt::Debug for HeartbeatKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatKeys")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("ignored", &self.ignored)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatKeyError {
    #[error(
        "Secret {SECRET_NAME} has no `{ACTIVE_ENTRY}` entry; set it to the id of a `key-<id>` entry"
    )]
    NoActive,
    #[error("Secret {SECRET_NAME}: `{ACTIVE_ENTRY}` is {0:?}, not a key id from 1 to 65535")]
    ActiveNotAnId(String),
    #[error("Secret {SECRET_NAME}: `{ACTIVE_ENTRY}` is {0} but there is no `key-{0}` entry")]
    ActiveKeyMissing(u16),
    #[error("Secret {SECRET_NAME}: `{name}` is not `key-<id>` with an id from 1 to 65535")]
    BadKeyName { name: String },
    #[error("Secret {SECRET_NAME}: `key-{id}` has {len} bytes; a key needs at least {KEY_LEN}")]
    KeyTooShort { id: u16, len: usize },
    #[error("no random bytes from the operating system for a new heartbeat key")]
    NoRandomness,
}

impl HeartbeatKeys {
    /// Reads a Secret's `data`.
    pub fn from_data<'a>(
        data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, HeartbeatKeyError> {
        let mut active = None;
        let mut keys = BTreeMap::new();
        let mut ignored = Vec::new();
        for (name, value) in data {
            if name == ACTIVE_ENTRY {
                let text = String::from_utf8_lossy(value).trim().to_owned();
                let id = parse_id(&text).ok_or(HeartbeatKeyError::ActiveNotAnId(text))?;
                active = Some(id);
            } else if let Some(id) = name.strip_prefix(KEY_ENTRY_PREFIX) {
                let id = parse_id(id).ok_or_else(|| HeartbeatKeyError::BadKeyName {
                    name: name.to_owned(),
                })?;
                if value.len() < KEY_LEN {
                    return Err(HeartbeatKeyError::KeyTooShort {
                        id,
                        len: value.len(),
                    });
                }
                keys.insert(id, value.to_vec());
            } else {
                ignored.push(name.to_owned());
            }
        }
        let active = active.ok_or(HeartbeatKeyError::NoActive)?;
        if !keys.contains_key(&active) {
            return Err(HeartbeatKeyError::ActiveKeyMissing(active));
        }
        Ok(Self {
            active,
            keys,
            ignored,
        })
    }

    /// The `data` of a new Secret: one random key, id 1, active.
    pub fn generate_data() -> Result<BTreeMap<String, Vec<u8>>, HeartbeatKeyError> {
        let mut key = vec![0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| HeartbeatKeyError::NoRandomness)?;
        Ok(BTreeMap::from([
            (format!("{KEY_ENTRY_PREFIX}1"), key),
            (ACTIVE_ENTRY.to_owned(), b"1".to_vec()),
        ]))
    }

    /// The key speakers sign with.
    pub fn active_key(&self) -> &[u8] {
        self.keys.get(&self.active).map_or(&[], Vec::as_slice)
    }
}

fn parse_id(text: &str) -> Option<u16> {
    // Digits only: "+1" or " 1" would be a second spelling of the same id.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|id| *id != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(entries: &[(&str, &[u8])]) -> Result<HeartbeatKeys, HeartbeatKeyError> {
        HeartbeatKeys::from_data(entries.iter().copied())
    }

    #[test]
    fn a_generated_secret_reads_back_with_its_key_active() {
        let data = HeartbeatKeys::generate_data().unwrap_or_else(|e| panic!("{e}"));
        let keys = HeartbeatKeys::from_data(data.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.active, 1);
        assert_eq!(keys.active_key().len(), KEY_LEN);
        assert_ne!(keys.active_key(), [0u8; KEY_LEN]);
        let again = HeartbeatKeys::generate_data().unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(data, again, "two Secrets, two keys");
    }

    #[test]
    fn rotation_keeps_every_key_and_signs_with_the_active_one() {
        let keys = read(&[("key-1", &[1; 32]), ("key-2", &[2; 40]), ("active", b"2\n")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.active, 2);
        assert_eq!(keys.keys.len(), 2);
        assert_eq!(keys.active_key(), [2; 40]);
    }

    #[test]
    fn a_broken_secret_says_what_to_fix() {
        assert_eq!(
            read(&[("key-1", &[1; 32])]),
            Err(HeartbeatKeyError::NoActive)
        );
        assert_eq!(
            read(&[("key-1", &[1; 32]), ("active", b"2")]),
            Err(HeartbeatKeyError::ActiveKeyMissing(2))
        );
        assert_eq!(
            read(&[("active", b"one")]),
            Err(HeartbeatKeyError::ActiveNotAnId("one".into()))
        );
        assert_eq!(
            read(&[("active", b"0")]),
            Err(HeartbeatKeyError::ActiveNotAnId("0".into()))
        );
        assert_eq!(
            read(&[("key-+1", &[1; 32]), ("active", b"1")]),
            Err(HeartbeatKeyError::BadKeyName {
                name: "key-+1".into()
            })
        );
        assert_eq!(
            read(&[("key-1", &[1; 16]), ("active", b"1")]),
            Err(HeartbeatKeyError::KeyTooShort { id: 1, len: 16 })
        );
        let message = HeartbeatKeyError::KeyTooShort { id: 1, len: 16 }.to_string();
        assert!(message.contains("at least 32"), "{message}");
    }

    #[test]
    fn other_entries_are_ignored_and_named_and_keys_never_printed() {
        let keys = read(&[("key-1", &[0xab; 32]), ("active", b"1"), ("note", b"x")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.ignored, ["note"]);
        let printed = format!("{keys:?}");
        assert!(!printed.contains("171"), "{printed}");
    }
}
