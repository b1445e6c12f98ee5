//! The heartbeat keys this speaker signs and verifies with, read from the Secret the controller
//! creates (`ferrolb_crds::heartbeat_key`) and kept current by a watch.
//!
//! A Secret that cannot be read never takes working keys away: an edit that breaks it, or its
//! deletion, leaves the last good keys in use, so one bad `kubectl edit` cannot silence every
//! speaker's heartbeats at once. The error is logged with what to fix.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::{Arc, PoisonError, RwLock};

use ferrolb_crds::heartbeat_key::{HeartbeatKeyError, HeartbeatKeys, SECRET_NAME};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use ring::hmac;
use tokio::sync::watch;

/// The keys of one reading of the Secret, ready for HMAC-SHA-256.
pub struct KeyRing {
    signing_id: u16,
    signing: hmac::Key,
    keys: BTreeMap<u16, hmac::Key>,
}

impl KeyRing {
    /// Fails only when `keys` has no key for its `active` id, which
    /// [`HeartbeatKeys::from_data`] already refuses; the fields are public, so it is checked
    /// again rather than assumed.
    pub fn new(keys: &HeartbeatKeys) -> Result<Self, HeartbeatKeyError> {
        let signing = keys
            .keys
            .get(&keys.active)
            .map(|bytes| hmac::Key::new(hmac::HMAC_SHA256, bytes))
            .ok_or(HeartbeatKeyError::ActiveKeyMissing(keys.active))?;
        Ok(Self {
            signing_id: keys.active,
            signing,
            keys: keys
                .keys
                .iter()
                .map(|(&id, bytes)| (id, hmac::Key::new(hmac::HMAC_SHA256, bytes)))
                .collect(),
        })
    }

    /// The key id heartbeats this speaker sends carry.
    pub fn signing_id(&self) -> u16 {
        self.signing_id
    }

    pub fn signing_key(&self) -> &hmac::Key {
        &self.signing
    }

    /// A key heartbeats tagged with `id` are verified with: every key of the Secret, so a
    /// rotation's new key is accepted before anyone signs with it.
    pub fn key(&self, id: u16) -> Option<&hmac::Key> {
        self.keys.get(&id)
    }

    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.keys.keys().copied()
    }
}

// Key material must never reach a log line, even a debug one.
impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_id", &self.signing_id)
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

/// The current keys, for the heartbeat sender and the packet readers. `None` until the Secret
/// has been read once; after that it only ever changes to another ring.
pub type SharedKeys = Arc<RwLock<Option<Arc<KeyRing>>>>;

/// The ring in use now, without holding the lock past the call.
pub fn current_keys(keys: &SharedKeys) -> Option<Arc<KeyRing>> {
    // A poisoned lock still holds a whole ring: the writer only swaps an `Option<Arc>`.
    keys.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// What reading the Secret's `data` once changed.
#[derive(Debug)]
enum Reading {
    Loaded {
        ring: Arc<KeyRing>,
        ignored: Vec<String>,
    },
    /// The same keys as last time (a label or annotation edit, a relist): nothing to replace.
    Unchanged,
    Refused(HeartbeatKeyError),
}

/// Turns successive readings of the Secret into rings, remembering the last good one.
#[derive(Default)]
struct SecretReader {
    last: Option<HeartbeatKeys>,
}

impl SecretReader {
    fn read(&mut self, data: &BTreeMap<String, ByteString>) -> Reading {
        let parsed = HeartbeatKeys::from_data(
            data.iter()
                .map(|(name, value)| (name.as_str(), value.0.as_slice())),
        )
        .and_then(|keys| KeyRing::new(&keys).map(|ring| (keys, ring)));
        match parsed {
            Err(error) => Reading::Refused(error),
            Ok((keys, _)) if self.last.as_ref() == Some(&keys) => Reading::Unchanged,
            Ok((keys, ring)) => {
                let ignored = keys.ignored.clone();
                self.last = Some(keys);
                Reading::Loaded {
                    ring: Arc::new(ring),
                    ignored,
                }
            }
        }
    }
}

/// Keeps `keys` equal to the Secret [`SECRET_NAME`] in `namespace`, and bumps `changed` each
/// time it is replaced. Runs until the watch stream ends, which it does not: errors are logged
/// and retried with backoff.
pub async fn watch_keys(
    client: Client,
    namespace: String,
    keys: SharedKeys,
    changed: watch::Sender<u64>,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    // The speaker may only get, list and watch this one Secret (RBAC resourceNames); the API
    // server authorizes a list or watch for resourceNames only with this field selector.
    let config = watcher::Config::default().fields(&format!("metadata.name={SECRET_NAME}"));
    let mut events = pin!(watcher(api, config).default_backoff());
    let mut reader = SecretReader::default();
    // Whether the Secret appeared in the (re)list under way: a relist that misses it is a
    // deletion the watch never reported.
    let mut seen_in_list = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => seen_in_list = false,
            Ok(watcher::Event::InitApply(secret)) => {
                seen_in_list = true;
                load(&mut reader, &secret, &keys, &changed, &namespace);
            }
            Ok(watcher::Event::Apply(secret)) => {
                load(&mut reader, &secret, &keys, &changed, &namespace);
            }
            Ok(watcher::Event::InitDone) if !seen_in_list => missing(&keys, &namespace),
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => missing(&keys, &namespace),
            Err(error) => {
                tracing::warn!(%namespace, secret = SECRET_NAME, %error, "watching the heartbeat key Secret failed; retrying");
            }
        }
    }
    tracing::error!(%namespace, secret = SECRET_NAME, "the heartbeat key watch ended");
}

fn load(
    reader: &mut SecretReader,
    secret: &Secret,
    keys: &SharedKeys,
    changed: &watch::Sender<u64>,
    namespace: &str,
) {
    let empty = BTreeMap::new();
    match reader.read(secret.data.as_ref().unwrap_or(&empty)) {
        Reading::Loaded { ring, ignored } => {
            let ids: Vec<u16> = ring.ids().collect();
            let active = ring.signing_id();
            *keys.write().unwrap_or_else(PoisonError::into_inner) = Some(ring);
            changed.send_modify(|generation| *generation = generation.wrapping_add(1));
            tracing::info!(%namespace, secret = SECRET_NAME, ?ids, active, "heartbeat keys loaded");
            if !ignored.is_empty() {
                tracing::warn!(%namespace, secret = SECRET_NAME, ?ignored, "entries of the heartbeat key Secret that are neither `active` nor `key-<id>` are ignored");
            }
        }
        Reading::Unchanged => {}
        Reading::Refused(error) => {
            let keeping = current_keys(keys).map(|ring| ring.signing_id());
            tracing::error!(%namespace, secret = SECRET_NAME, %error, keeping_active = ?keeping, "the heartbeat key Secret is unusable; keeping the keys loaded before");
        }
    }
}

fn missing(keys: &SharedKeys, namespace: &str) {
    match current_keys(keys) {
        Some(ring) => {
            tracing::warn!(%namespace, secret = SECRET_NAME, active = ring.signing_id(), "the heartbeat key Secret is gone; signing with the last keys until the controller recreates it");
        }
        None => {
            tracing::warn!(%namespace, secret = SECRET_NAME, "no heartbeat key Secret yet; heartbeats can be neither sent nor verified until the controller creates it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(entries: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        entries
            .iter()
            .map(|(name, value)| ((*name).to_owned(), ByteString(value.to_vec())))
            .collect()
    }

    fn keys(entries: &[(&str, &[u8])]) -> HeartbeatKeys {
        HeartbeatKeys::from_data(entries.iter().copied()).unwrap()
    }

    #[test]
    fn the_ring_signs_with_the_active_key_and_verifies_with_every_key() {
        let ring = KeyRing::new(&keys(&[
            ("key-1", &[1; 32]),
            ("key-2", &[2; 32]),
            ("active", b"2"),
        ]))
        .unwrap();
        assert_eq!(ring.signing_id(), 2);
        assert_eq!(ring.ids().collect::<Vec<_>>(), [1, 2]);
        let tag = hmac::sign(ring.signing_key(), b"heartbeat");
        assert!(hmac::verify(ring.key(2).unwrap(), b"heartbeat", tag.as_ref()).is_ok());
        assert!(hmac::verify(ring.key(1).unwrap(), b"heartbeat", tag.as_ref()).is_err());
        assert!(ring.key(3).is_none());
    }

    #[test]
    fn a_ring_needs_its_active_key() {
        let mut broken = keys(&[("key-1", &[1; 32]), ("active", b"1")]);
        broken.active = 4;
        assert_eq!(
            KeyRing::new(&broken).unwrap_err(),
            HeartbeatKeyError::ActiveKeyMissing(4)
        );
    }

    #[test]
    fn debug_output_names_ids_only() {
        let ring = KeyRing::new(&keys(&[("key-7", &[0xab; 32]), ("active", b"7")])).unwrap();
        let printed = format!("{ring:?}");
        assert_eq!(printed, "KeyRing { signing_id: 7, ids: [7] }");
    }

    #[test]
    fn a_broken_secret_keeps_the_last_good_keys_and_says_why() {
        let mut reader = SecretReader::default();
        let good = data(&[("key-1", &[1; 32]), ("active", b"1"), ("note", b"x")]);
        let Reading::Loaded { ring, ignored } = reader.read(&good) else {
            panic!("the first good Secret loads");
        };
        assert_eq!(ring.signing_id(), 1);
        assert_eq!(ignored, ["note"]);
        // A metadata-only change or a relist: the same keys, nothing replaced.
        assert!(matches!(reader.read(&good), Reading::Unchanged));
        let Reading::Refused(error) = reader.read(&data(&[("key-1", &[1; 32])])) else {
            panic!("no active entry is refused");
        };
        assert_eq!(error, HeartbeatKeyError::NoActive);
        // The refused reading did not replace what is remembered: the good keys again are
        // still unchanged, and a rotation loads.
        assert!(matches!(reader.read(&good), Reading::Unchanged));
        let rotated = data(&[("key-1", &[1; 32]), ("key-2", &[2; 32]), ("active", b"2")]);
        let Reading::Loaded { ring, .. } = reader.read(&rotated) else {
            panic!("a rotation loads");
        };
        assert_eq!(ring.signing_id(), 2);
        assert!(matches!(reader.read(&BTreeMap::new()), Reading::Refused(_)));
    }

    #[test]
    fn shared_keys_start_empty_and_read_through_a_poisoned_lock() {
        let shared: SharedKeys = Arc::default();
        assert!(current_keys(&shared).is_none());
        let ring = KeyRing::new(&keys(&[("key-1", &[1; 32]), ("active", b"1")])).unwrap();
        *shared.write().unwrap() = Some(Arc::new(ring));
        let poisoner = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.write().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert_eq!(current_keys(&shared).map(|ring| ring.signing_id()), Some(1));
    }
}
