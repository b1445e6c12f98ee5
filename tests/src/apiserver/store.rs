//! Object storage: objects by type and (namespace, name), the global
//! resourceVersion counter, and the bounded watch history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::resources::Registry;
use super::service::ServiceAllocators;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and fanned out to watches.
#[derive(Debug)]
pub struct StoredEvent {
    pub resource_version: u64,
    pub storage_key: String,
    pub namespace: String,
    pub event_type: EventType,
    pub object: Value,
    /// The object before the change, so a watch with a selector can turn a
    /// change that moves the object in or out of the selection into
    /// ADDED/DELETED as kube-apiserver does.
    pub previous: Option<Value>,
    /// The watch frame for this event as stored, serialized once and shared
    /// by every watch that sends it unchanged.
    pub encoded_frame: OnceLock<bytes::Bytes>,
}

impl StoredEvent {
    /// `{"type": ..., "object": ...}` plus newline, serialized on first use.
    pub fn frame(&self) -> bytes::Bytes {
        self.encoded_frame
            .get_or_init(|| {
                let frame = json!({"type": self.event_type.as_str(), "object": self.object});
                let mut encoded = serde_json::to_vec(&frame).unwrap_or_default();
                encoded.push(b'\n');
                bytes::Bytes::from(encoded)
            })
            .clone()
    }
}

/// Where a new watch starts reading.
pub struct WatchStart {
    pub replay: Vec<Arc<StoredEvent>>,
    pub receiver: broadcast::Receiver<Arc<StoredEvent>>,
    pub current_resource_version: u64,
}

type ObjectKey = (String, String);

/// Everything behind the single store lock. Writes happen with the lock held,
/// so resourceVersions, history order and watch fan-out order all agree.
pub struct StoreState {
    resource_version: u64,
    objects: HashMap<String, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<StoredEvent>>,
    history_limit: usize,
    /// Highest resourceVersion that fell out of the history; watches from
    /// before it get 410 Gone.
    compacted_resource_version: u64,
    events: broadcast::Sender<Arc<StoredEvent>>,
    pub allocators: ServiceAllocators,
    pub registry: Registry,
    uid_counter: u64,
    uid_seed: u64,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl StoreState {
    pub fn new(history_limit: usize, fanout_capacity: usize) -> Self {
        let (events, _) = broadcast::channel(fanout_capacity.max(16));
        Self {
            resource_version: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_resource_version: 0,
            events,
            allocators: ServiceAllocators::default(),
            registry: Registry::default(),
            uid_counter: 0,
            uid_seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
                ^ u64::from(std::process::id()).rotate_left(32),
        }
    }

    pub fn current_resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn new_uid(&mut self) -> String {
        self.uid_counter += 1;
        // Version-4-shaped: a per-store random-ish seed mixed with a counter,
        // so uids differ across stores (and test runs) and never repeat in one.
        let mixed = splitmix64(self.uid_seed ^ self.uid_counter);
        let low = splitmix64(mixed);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (mixed >> 32) as u32,
            (mixed >> 16) & 0xffff,
            mixed & 0xfff,
            (low >> 48) & 0xfff,
            (low & 0xffff_ffff_0000) | (self.uid_counter & 0xffff)
        )
    }

    pub fn get(&self, storage_key: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(storage_key)
            .and_then(|objects| objects.get(&(namespace.to_string(), name.to_string())))
    }

    /// Objects of a type, ordered by namespace then name; all namespaces when
    /// `namespace` is `None`.
    pub fn list<'a>(
        &'a self,
        storage_key: &str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .get(storage_key)
            .into_iter()
            .flat_map(|objects| objects.iter())
            .filter(move |((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
            .map(|(_, object)| object)
    }

    pub fn all_objects(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.objects
            .iter()
            .flat_map(|(key, objects)| objects.values().map(move |o| (key, o)))
    }

    fn record(&mut self, event: StoredEvent) {
        let event = Arc::new(event);
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_resource_version = dropped.resource_version;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    /// Stores a created or changed object, stamping a new resourceVersion.
    pub fn put(&mut self, storage_key: &str, mut object: Value) -> Value {
        self.resource_version += 1;
        let rv = self.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let namespace = meta_str(&object, "namespace").to_string();
        let name = meta_str(&object, "name").to_string();
        let previous = self
            .objects
            .entry(storage_key.to_string())
            .or_default()
            .insert((namespace.clone(), name), object.clone());
        let event_type = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(StoredEvent {
            resource_version: rv,
            storage_key: storage_key.to_string(),
            namespace,
            event_type,
            object: object.clone(),
            previous,
            encoded_frame: OnceLock::new(),
        });
        object
    }

    /// Removes an object for good; the DELETED event carries a new resourceVersion.
    pub fn remove(&mut self, storage_key: &str, namespace: &str, name: &str) -> Option<Value> {
        let mut removed = self
            .objects
            .get_mut(storage_key)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        self.resource_version += 1;
        let rv = self.resource_version;
        removed["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(StoredEvent {
            resource_version: rv,
            storage_key: storage_key.to_string(),
            namespace: namespace.to_string(),
            event_type: EventType::Deleted,
            object: removed.clone(),
            previous: None,
            encoded_frame: OnceLock::new(),
        });
        Some(removed)
    }

    /// Subscribes to changes after `since`; `None` when `since` is older than
    /// the history kept (the caller answers 410 Gone).
    pub fn watch_from(&self, since: u64) -> Option<WatchStart> {
        if since < self.compacted_resource_version {
            return None;
        }
        let replay = self
            .history
            .iter()
            .filter(|e| e.resource_version > since)
            .cloned()
            .collect();
        Some(WatchStart {
            replay,
            receiver: self.events.subscribe(),
            current_resource_version: self.resource_version,
        })
    }

    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_resource_version = dropped.resource_version;
            }
        }
    }

    /// Forgets all history, so every resourceVersion older than now is Gone.
    pub fn compact_all(&mut self) {
        self.history.clear();
        self.compacted_resource_version = self.resource_version;
    }

    pub fn compacted_resource_version(&self) -> u64 {
        self.compacted_resource_version
    }
}
