//! The allocation engine: which Service holds which external IPs. Pure; no Kubernetes I/O.
//!
//! Memory grows with allocated addresses and pool ranges, never with pool size; allocation,
//! release and lookup take O(log n) in the number of allocated addresses.

pub mod free_space;
pub mod pool_order;
pub mod request;
pub mod sharing;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::addresses::address_value;
use ferrolb_crds::{AddressCount, IpFamily};

use free_space::{FreeSpace, is_buggy_value};
pub use pool_order::PoolConfig;
pub use request::{AllocationError, AllocationRequest, FamilyPolicy};
use sharing::AddressUse;
pub use sharing::{Backend, PortKey, SharingConflict, SharingProfile};

/// A Service, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The addresses a Service holds, all from one pool, primary family first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub pool: Arc<str>,
    pub addresses: Vec<IpAddr>,
    /// The request the addresses were checked against.
    pub request: Arc<AllocationRequest>,
}

/// What reconciling one Service did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    /// Addresses taken away because they became invalid, and why.
    pub cleared: Option<(Assignment, String)>,
    /// The Service's assignment now, or why it has none.
    pub outcome: Result<Assignment, AllocationError>,
    /// Whether the outcome is a fresh allocation (an event is due).
    pub newly_allocated: bool,
}

/// An assignment that kept its addresses in another pool because its own stopped covering them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rehomed {
    pub from: Arc<str>,
    /// The assignment now, in its new pool.
    pub assignment: Assignment,
    /// Why the old pool no longer backs it.
    pub reason: String,
}

/// What replacing the pools did to existing assignments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolChanges {
    /// Assignments no pool backs any more, and why.
    pub dropped: Vec<(Assignment, String)>,
    pub rehomed: Vec<Rehomed>,
}

/// An assignment found in a Service's status, to be replayed after a (re)start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingAssignment {
    pub request: AllocationRequest,
    pub addresses: Vec<IpAddr>,
    /// Creation time (seconds); older Services win conflicting claims.
    pub created: Option<i64>,
}

#[derive(Debug, Clone)]
struct FamilyState {
    free: FreeSpace,
    used: BTreeMap<u128, AddressUse>,
    /// Addresses by sharing key, so a sharing Service finds a compatible address without a scan.
    by_key: HashMap<String, BTreeSet<u128>>,
}

impl FamilyState {
    fn new(family: IpFamily, avoid_buggy: bool) -> Self {
        Self {
            free: FreeSpace::new(family, avoid_buggy),
            used: BTreeMap::new(),
            by_key: HashMap::new(),
        }
    }

    fn unindex_key(&mut self, key: Option<&String>, value: u128) {
        if let Some(key) = key
            && let Some(values) = self.by_key.get_mut(key)
        {
            values.remove(&value);
            if values.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    fn join(&mut self, value: u128, user: &Arc<AllocationRequest>) {
        match self.used.get_mut(&value) {
            Some(address_use) => {
                let old_key = address_use.key().cloned();
                address_use.join(Arc::clone(user));
                let new_key = address_use.key().cloned();
                if old_key != new_key {
                    self.unindex_key(old_key.as_ref(), value);
                    if let Some(key) = new_key {
                        self.by_key.entry(key).or_default().insert(value);
                    }
                }
            }
            None => {
                self.used.insert(value, AddressUse::new(Arc::clone(user)));
                self.free.insert(value);
                if let Some(key) = &user.sharing.key {
                    self.by_key.entry(key.clone()).or_default().insert(value);
                }
            }
        }
    }

    fn leave(&mut self, value: u128, service: &ServiceKey) {
        let Some(address_use) = self.used.get_mut(&value) else {
            return;
        };
        let key = address_use.key().cloned();
        if address_use.leave(service) {
            self.used.remove(&value);
            self.free.remove(value);
            self.unindex_key(key.as_ref(), value);
        }
    }
}

#[derive(Debug, Clone)]
struct PoolState {
    name: Arc<str>,
    config: PoolConfig,
    ipv4: FamilyState,
    ipv6: FamilyState,
}

impl PoolState {
    fn new(config: PoolConfig) -> Self {
        let avoid = config.avoid_buggy_ips;
        Self {
            name: config.name.as_str().into(),
            config,
            ipv4: FamilyState::new(IpFamily::IPv4, avoid),
            ipv6: FamilyState::new(IpFamily::IPv6, avoid),
        }
    }

    fn family(&self, family: IpFamily) -> &FamilyState {
        match family {
            IpFamily::IPv4 => &self.ipv4,
            IpFamily::IPv6 => &self.ipv6,
        }
    }

    fn family_mut(&mut self, family: IpFamily) -> &mut FamilyState {
        match family {
            IpFamily::IPv4 => &mut self.ipv4,
            IpFamily::IPv6 => &mut self.ipv6,
        }
    }

    fn allows(&self, request: &AllocationRequest) -> bool {
        self.config.allows(
            &request.service.namespace,
            &request.namespace_labels,
            &request.service_labels,
        )
    }

    fn skips(&self, ip: IpAddr) -> bool {
        self.config.avoid_buggy_ips && is_buggy_value(IpFamily::of(ip), address_value(ip))
    }

    /// The lowest address of `family` this request may take: free, or shared compatibly.
    fn candidate(&self, family: IpFamily, request: &AllocationRequest) -> Option<u128> {
        let state = self.family(family);
        let free = state
            .free
            .lowest_free(self.config.addresses.ranges_of(family));
        let shared = request
            .sharing
            .key
            .as_ref()
            .and_then(|key| state.by_key.get(key))
            .and_then(|values| {
                values.iter().copied().find(|value| {
                    state.used.get(value).is_some_and(|u| {
                        u.admits(&request.service, &request.sharing).is_ok()
                            && !u.is_used_by(&request.service)
                    })
                })
            });
        match (free, shared) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Every pool's allocations and every Service's assignment.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    pools: BTreeMap<String, PoolState>,
    assignments: HashMap<ServiceKey, Assignment>,
}

impl Allocator {
    pub fn new(pools: impl IntoIterator<Item = PoolConfig>) -> Self {
        Self {
            pools: pools
                .into_iter()
                .map(|p| (p.name.clone(), PoolState::new(p)))
                .collect(),
            assignments: HashMap::new(),
        }
    }

    pub fn assignment(&self, service: &ServiceKey) -> Option<&Assignment> {
        self.assignments.get(service)
    }

    pub fn assignments(&self) -> impl Iterator<Item = (&ServiceKey, &Assignment)> {
        self.assignments.iter()
    }

    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.get(name).map(|p| &p.config)
    }

    pub fn pools(&self) -> impl Iterator<Item = &PoolConfig> {
        self.pools.values().map(|p| &p.config)
    }

    /// Number of distinct addresses of `family` in use in `pool`.
    pub fn in_use(&self, pool: &str, family: IpFamily) -> AddressCount {
        self.pools
            .get(pool)
            .map_or(AddressCount::ZERO, |p| p.family(family).used.len().into())
    }

    /// The pool holding `ip` as allocated, and the Services using it.
    pub fn users_of(&self, ip: IpAddr) -> Option<(&str, Vec<&ServiceKey>)> {
        let family = IpFamily::of(ip);
        let value = address_value(ip);
        self.pools.values().find_map(|pool| {
            pool.family(family)
                .used
                .get(&value)
                .map(|u| (pool.config.name.as_str(), u.users().collect()))
        })
    }

    /// Replaces the pools. An assignment whose pool no longer holds its addresses moves to another
    /// pool that holds them and would have been eligible for a fresh allocation (an assigned IP
    /// never changes unless it became invalid); assignments no pool backs are dropped and returned
    /// with the reason; all others stay exactly as they were.
    pub fn set_pools(&mut self, pools: impl IntoIterator<Item = PoolConfig>) -> PoolChanges {
        let old = std::mem::take(&mut self.assignments);
        self.pools = pools
            .into_iter()
            .map(|p| (p.name.clone(), PoolState::new(p)))
            .collect();
        let mut sorted: Vec<Assignment> = old.into_values().collect();
        sorted.sort_by(|a, b| a.request.service.cmp(&b.request.service));
        let mut changes = PoolChanges::default();
        for assignment in sorted {
            match self.pool_backs(&assignment) {
                Ok(()) => self.commit(assignment),
                Err(reason) => match self.rehome(&assignment) {
                    Some(moved) => {
                        changes.rehomed.push(Rehomed {
                            from: Arc::clone(&assignment.pool),
                            assignment: moved.clone(),
                            reason,
                        });
                        self.commit(moved);
                    }
                    None => changes.dropped.push((assignment, reason)),
                },
            }
        }
        changes
    }

    /// The pool that may take over an assignment its own pool stopped covering: one that holds
    /// every address (after overlaps with older pools are removed), does not skip them, admits the
    /// Service on each, and is one a fresh allocation could have used. A Service that names its
    /// pool stays pinned to that name, and a pool that merely stopped allowing the Service does
    /// not hand it elsewhere (that is a policy change, not a move of addresses).
    fn rehome(&self, assignment: &Assignment) -> Option<Assignment> {
        let request = &*assignment.request;
        if request.pool.is_some() {
            return None;
        }
        let still_covered = self.pools.get(&*assignment.pool).is_some_and(|pool| {
            assignment
                .addresses
                .iter()
                .all(|&ip| pool.config.addresses.contains(ip))
        });
        if still_covered {
            return None;
        }
        let candidates: Vec<&PoolState> = if request.addresses.is_empty() {
            pool_order::automatic_candidates(
                self.pools.values().map(|p| &p.config),
                &request.service.namespace,
                &request.namespace_labels,
                &request.service_labels,
            )
            .into_iter()
            .filter_map(|config| self.pools.get(&config.name))
            .collect()
        } else {
            // Explicitly requested addresses may come from any pool that allows the Service,
            // auto-assign or not, as in `check_requested`.
            self.pools.values().filter(|p| p.allows(request)).collect()
        };
        let pool = candidates.into_iter().find(|pool| {
            assignment.addresses.iter().all(|&ip| {
                pool.config.addresses.contains(ip)
                    && !pool.skips(ip)
                    && pool
                        .family(IpFamily::of(ip))
                        .used
                        .get(&address_value(ip))
                        .is_none_or(|u| u.admits(&request.service, &request.sharing).is_ok())
            })
        })?;
        Some(Assignment {
            pool: Arc::clone(&pool.name),
            ..assignment.clone()
        })
    }

    /// Whether the assignment's pool still holds, allows and does not skip its addresses.
    fn pool_backs(&self, assignment: &Assignment) -> Result<(), String> {
        let Some(pool) = self.pools.get(&*assignment.pool) else {
            return Err(format!("pool {} was deleted", assignment.pool));
        };
        for &ip in &assignment.addresses {
            if !pool.config.addresses.contains(ip) {
                return Err(format!("pool {} no longer contains {ip}", assignment.pool));
            }
            if pool.skips(ip) {
                return Err(format!(
                    "{ip} ends in .0 or .255 and pool {} avoids such addresses",
                    assignment.pool
                ));
            }
        }
        if !pool.allows(&assignment.request) {
            return Err(format!(
                "pool {} no longer allows this Service",
                assignment.pool
            ));
        }
        Ok(())
    }

    /// Whether the existing assignment still satisfies the (possibly changed) request.
    fn still_valid(
        &self,
        assignment: &Assignment,
        request: &AllocationRequest,
    ) -> Result<(), String> {
        let with_new_request = Assignment {
            request: Arc::new(request.clone()),
            ..assignment.clone()
        };
        self.pool_backs(&with_new_request)?;
        if let Some(pool) = &request.pool
            && **pool != *assignment.pool
        {
            return Err(format!("the Service now asks for pool {pool}"));
        }
        if !request.addresses.is_empty() {
            let mut wanted = request.addresses.clone();
            let mut held = assignment.addresses.clone();
            wanted.sort();
            held.sort();
            if wanted != held {
                return Err(format!("the Service now asks for {}", join_ips(&wanted)));
            }
        }
        let families: Vec<IpFamily> = assignment
            .addresses
            .iter()
            .map(|&ip| IpFamily::of(ip))
            .collect();
        if !request.families.accepts(&families) {
            return Err("the Service's ipFamilyPolicy or ipFamilies changed".to_owned());
        }
        let pool = self.pools.get(&*assignment.pool);
        for &ip in &assignment.addresses {
            let address_use =
                pool.and_then(|p| p.family(IpFamily::of(ip)).used.get(&address_value(ip)));
            if let Some(address_use) = address_use
                && let Err(conflict) = address_use.admits(&request.service, &request.sharing)
            {
                return Err(format!("sharing no longer allowed: {ip} {conflict}"));
            }
        }
        Ok(())
    }

    fn commit(&mut self, assignment: Assignment) {
        let service = assignment.request.service.clone();
        if let Some(pool) = self.pools.get_mut(&*assignment.pool) {
            for &ip in &assignment.addresses {
                pool.family_mut(IpFamily::of(ip))
                    .join(address_value(ip), &assignment.request);
            }
        }
        self.assignments.insert(service, assignment);
    }

    /// Frees the Service's addresses (shared ones stay with their other users).
    pub fn release(&mut self, service: &ServiceKey) -> Option<Assignment> {
        let assignment = self.assignments.remove(service)?;
        if let Some(pool) = self.pools.get_mut(&*assignment.pool) {
            for &ip in &assignment.addresses {
                pool.family_mut(IpFamily::of(ip))
                    .leave(address_value(ip), service);
            }
        }
        Some(assignment)
    }

    /// Keeps a valid assignment (updating sharing details in place), replaces an invalid one, or
    /// allocates for a Service without one.
    pub fn reconcile(&mut self, request: &AllocationRequest) -> Reconciliation {
        let mut cleared = None;
        if let Some(existing) = self.assignments.get(&request.service).cloned() {
            match self.still_valid(&existing, request) {
                Ok(()) => {
                    let updated = if *existing.request == *request {
                        existing
                    } else {
                        let updated = Assignment {
                            addresses: order_primary_first(
                                &existing.addresses,
                                request.families.primary(),
                            ),
                            request: Arc::new(request.clone()),
                            ..existing
                        };
                        self.commit(updated.clone());
                        updated
                    };
                    return Reconciliation {
                        cleared: None,
                        outcome: Ok(updated),
                        newly_allocated: false,
                    };
                }
                Err(reason) => {
                    self.release(&request.service);
                    cleared = Some((existing, reason));
                }
            }
        }
        let outcome = self.allocate(request);
        Reconciliation {
            cleared,
            newly_allocated: outcome.is_ok(),
            outcome,
        }
    }

    /// Allocates for a Service that holds nothing.
    pub fn allocate(&mut self, request: &AllocationRequest) -> Result<Assignment, AllocationError> {
        if let Some(existing) = self.assignments.get(&request.service) {
            return Ok(existing.clone());
        }
        let assignment = if request.addresses.is_empty() {
            self.choose_automatically(request)?
        } else {
            self.check_requested(request, &request.addresses)?
        };
        self.commit(assignment.clone());
        Ok(assignment)
    }

    /// Replays an assignment found in a Service's status, if it is still valid.
    pub fn restore(
        &mut self,
        request: &AllocationRequest,
        addresses: &[IpAddr],
    ) -> Result<Assignment, AllocationError> {
        if !request.addresses.is_empty() {
            let mut wanted = request.addresses.clone();
            let mut held = addresses.to_vec();
            wanted.sort();
            held.sort();
            if wanted != held {
                return Err(AllocationError::NotRequested {
                    held: join_ips(&held),
                    wanted: join_ips(&wanted),
                });
            }
        }
        if self.assignments.contains_key(&request.service) {
            self.release(&request.service);
        }
        let assignment = self.check_requested(request, addresses)?;
        self.commit(assignment.clone());
        Ok(assignment)
    }

    /// Replays many assignments. The order given does not matter: older Services (then by
    /// name) are replayed first, so they win conflicting claims.
    pub fn restore_all(
        &mut self,
        mut existing: Vec<ExistingAssignment>,
    ) -> Vec<(ServiceKey, Result<Assignment, AllocationError>)> {
        existing.sort_by(|a, b| {
            (a.created.unwrap_or(i64::MAX), &a.request.service)
                .cmp(&(b.created.unwrap_or(i64::MAX), &b.request.service))
        });
        existing
            .into_iter()
            .map(|e| {
                let result = self.restore(&e.request, &e.addresses);
                (e.request.service, result)
            })
            .collect()
    }

    /// Checks explicitly requested (or replayed) addresses and builds their assignment.
    fn check_requested(
        &self,
        request: &AllocationRequest,
        addresses: &[IpAddr],
    ) -> Result<Assignment, AllocationError> {
        let families: Vec<IpFamily> = addresses.iter().map(|&ip| IpFamily::of(ip)).collect();
        let allowed_families: Vec<IpFamily> = request
            .families
            .choices()
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect();
        for &ip in addresses {
            if !allowed_families.contains(&IpFamily::of(ip)) {
                return Err(AllocationError::WrongFamily {
                    ip,
                    family: IpFamily::of(ip),
                });
            }
        }
        if !request.families.accepts(&families) {
            return Err(AllocationError::FamiliesNotSatisfied);
        }
        let pool = match &request.pool {
            Some(name) => {
                let pool = self
                    .pools
                    .get(name)
                    .ok_or_else(|| AllocationError::UnknownPool(name.clone()))?;
                if let Some(&ip) = addresses
                    .iter()
                    .find(|&&ip| !pool.config.addresses.contains(ip))
                {
                    return Err(AllocationError::OutsideNamedPool {
                        ip,
                        pool: name.clone(),
                    });
                }
                pool
            }
            None => {
                let mut found: Option<(&PoolState, IpAddr)> = None;
                for &ip in addresses {
                    let pool = self
                        .pools
                        .values()
                        .find(|p| p.config.addresses.contains(ip))
                        .ok_or(AllocationError::OutsideEveryPool { ip })?;
                    if let Some((first_pool, first)) = found
                        && first_pool.config.name != pool.config.name
                    {
                        return Err(AllocationError::DifferentPools {
                            first,
                            first_pool: first_pool.config.name.clone(),
                            second: ip,
                            second_pool: pool.config.name.clone(),
                        });
                    }
                    found = Some((pool, ip));
                }
                found
                    .map(|(p, _)| p)
                    .ok_or(AllocationError::FamiliesNotSatisfied)?
            }
        };
        if !pool.allows(request) {
            return Err(AllocationError::PoolNotAllowed {
                pool: pool.config.name.clone(),
                namespace: request.service.namespace.clone(),
            });
        }
        for &ip in addresses {
            if pool.skips(ip) {
                return Err(AllocationError::BuggyAddress {
                    ip,
                    pool: pool.config.name.clone(),
                });
            }
            if let Some(address_use) = pool.family(IpFamily::of(ip)).used.get(&address_value(ip)) {
                address_use
                    .admits(&request.service, &request.sharing)
                    .map_err(|conflict| AllocationError::InUse { ip, conflict })?;
            }
        }
        Ok(Assignment {
            pool: Arc::clone(&pool.name),
            addresses: order_primary_first(addresses, request.families.primary()),
            request: Arc::new(request.clone()),
        })
    }

    fn choose_automatically(
        &self,
        request: &AllocationRequest,
    ) -> Result<Assignment, AllocationError> {
        let candidates: Vec<&PoolState> = match &request.pool {
            Some(name) => {
                let pool = self
                    .pools
                    .get(name)
                    .ok_or_else(|| AllocationError::UnknownPool(name.clone()))?;
                if !pool.allows(request) {
                    return Err(AllocationError::PoolNotAllowed {
                        pool: name.clone(),
                        namespace: request.service.namespace.clone(),
                    });
                }
                vec![pool]
            }
            None => pool_order::automatic_candidates(
                self.pools.values().map(|p| &p.config),
                &request.service.namespace,
                &request.namespace_labels,
                &request.service_labels,
            )
            .into_iter()
            .filter_map(|config| self.pools.get(&config.name))
            .collect(),
        };
        if candidates.is_empty() {
            return Err(AllocationError::NoPool);
        }
        for families in request.families.choices() {
            for pool in &candidates {
                let picked: Option<Vec<IpAddr>> = families
                    .iter()
                    .map(|&family| {
                        pool.candidate(family, request)
                            .map(|value| family.address(value))
                    })
                    .collect();
                if let Some(addresses) = picked {
                    return Ok(Assignment {
                        pool: Arc::clone(&pool.name),
                        addresses,
                        request: Arc::new(request.clone()),
                    });
                }
            }
        }
        Err(self.explain_no_address(request, &candidates))
    }

    fn explain_no_address(
        &self,
        request: &AllocationRequest,
        candidates: &[&PoolState],
    ) -> AllocationError {
        let primary = request.families.primary();
        if let (Some(name), [pool]) = (&request.pool, candidates) {
            let wanted: Vec<IpFamily> = match request.families {
                FamilyPolicy::SingleStack(f) => vec![f],
                FamilyPolicy::RequireDualStack { .. } => request.families.choices()[0].to_vec(),
                FamilyPolicy::PreferDualStack { .. } => request.families.choices()[0].to_vec(),
            };
            let present: Vec<IpFamily> = wanted
                .iter()
                .copied()
                .filter(|&f| pool.config.addresses.has_family(f))
                .collect();
            let lacking_matters = match request.families {
                FamilyPolicy::PreferDualStack { .. } => present.is_empty(),
                _ => present.len() < wanted.len(),
            };
            if lacking_matters && let Some(&family) = wanted.iter().find(|f| !present.contains(f)) {
                return AllocationError::PoolLacksFamily {
                    pool: name.clone(),
                    family,
                };
            }
            let exhausted = present
                .iter()
                .copied()
                .find(|&f| pool.candidate(f, request).is_none())
                .unwrap_or(primary);
            return AllocationError::PoolExhausted {
                pool: name.clone(),
                family: exhausted,
            };
        }
        match request.families {
            FamilyPolicy::RequireDualStack { .. } => AllocationError::NoFreeDualStack,
            _ => AllocationError::NoFreeAddress { family: primary },
        }
    }
}

fn order_primary_first(addresses: &[IpAddr], primary: IpFamily) -> Vec<IpAddr> {
    let mut ordered = addresses.to_vec();
    ordered.sort_by_key(|&ip| IpFamily::of(ip) != primary);
    ordered
}

/// "198.51.100.7, 2001:db8::7"
pub fn join_ips(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
