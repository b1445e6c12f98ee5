//! Allocator benchmark: 100,000 Services over two IPv4 /16 pools and one IPv6 pool (a /64, then a
//! /48), 10% of them sharing an IP with one other Service. Prints the median time per allocation
//! over several runs, peak heap memory of the allocator, and the /48 : /64 ratio (pool size must not
//! matter).
//!
//! Run: `cargo bench -p ferrolb-controller --bench allocator`
//!
//! The IPv4 "/16 pools" are 0.1.0.0/16 and 0.2.0.0/16 built numerically: pure in-memory numbers
//! inside 0.0.0.0/8 ("this network", never routed), not addresses configured on any host. The IPv6
//! pools are inside the documentation prefix 2001:db8::/32.
#![allow(unsafe_code)] // the counting global allocator below; nothing else

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ferrolb_controller::allocator::{
    AllocationRequest, Allocator, Backend, FamilyPolicy, PoolConfig, PortKey, ServiceKey,
    SharingProfile,
};
use ferrolb_crds::{AddressSet, IpFamily, IpRange};

struct CountingAllocator;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const SERVICES: usize = 100_000;
const RUNS: usize = 11;

fn numeric_v4_range(second_octet: u32) -> IpRange {
    let start = second_octet << 16;
    IpRange::new(
        IpFamily::IPv4.address(u128::from(start)),
        IpFamily::IPv4.address(u128::from(start | 0xffff)),
    )
    .unwrap_or_else(|e| panic!("bench range: {e}"))
}

fn pools(ipv6_prefix: &str) -> Vec<PoolConfig> {
    let v6 = AddressSet::parse([ipv6_prefix]).unwrap_or_else(|e| panic!("bench pool: {e:?}"));
    vec![
        PoolConfig::new("v4-a", AddressSet::from_ranges([numeric_v4_range(1)])),
        PoolConfig::new("v4-b", AddressSet::from_ranges([numeric_v4_range(2)])),
        PoolConfig::new("v6", v6),
    ]
}

/// 70% IPv4, 20% IPv6, 10% dual-stack; every 10th Service shares its key with the next one.
fn requests() -> Vec<AllocationRequest> {
    (0..SERVICES)
        .map(|i| {
            let families = match i % 10 {
                0..=6 => FamilyPolicy::SingleStack(IpFamily::IPv4),
                7 | 8 => FamilyPolicy::SingleStack(IpFamily::IPv6),
                _ => FamilyPolicy::PreferDualStack {
                    primary: IpFamily::IPv4,
                },
            };
            let mut request = AllocationRequest::new(
                ServiceKey::new(format!("ns{}", i % 100), format!("svc{i}")),
                families,
            );
            let sharing_group = i / 20;
            let shares = i % 20 < 2 && !matches!(families, FamilyPolicy::PreferDualStack { .. });
            request.sharing = SharingProfile {
                key: shares.then(|| format!("group{sharing_group}")),
                backend: Backend::Cluster,
                ports: [PortKey {
                    protocol: "TCP".into(),
                    port: 80 + (i % 20) as i32,
                }]
                .into(),
            };
            request
        })
        .collect()
}

struct RunResult {
    nanos_per_allocation: f64,
    peak_bytes: usize,
}

fn run(pools: &[PoolConfig], requests: &[AllocationRequest]) -> RunResult {
    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let mut allocator = Allocator::new(pools.iter().cloned());
    let started = Instant::now();
    let mut failures = 0;
    for request in requests {
        if allocator.allocate(request).is_err() {
            failures += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(failures, 0, "the pools are large enough for every Service");
    let peak_bytes = PEAK.load(Ordering::Relaxed) - baseline;
    drop(allocator);
    RunResult {
        nanos_per_allocation: elapsed.as_nanos() as f64 / requests.len() as f64,
        peak_bytes,
    }
}

/// Times each call separately, for the median of single allocations.
fn single_call_median(pools: &[PoolConfig], requests: &[AllocationRequest]) -> f64 {
    let mut allocator = Allocator::new(pools.iter().cloned());
    let mut samples: Vec<u64> = requests
        .iter()
        .map(|request| {
            let started = Instant::now();
            let outcome = allocator.allocate(request);
            let nanos = started.elapsed().as_nanos() as u64;
            std::hint::black_box(outcome.is_ok());
            nanos
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2] as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Scenario {
    label: &'static str,
    pools: Vec<PoolConfig>,
    requests: Vec<AllocationRequest>,
    per_allocation: Vec<f64>,
    peak: usize,
}

impl Scenario {
    fn new(label: &'static str, pools: Vec<PoolConfig>, requests: Vec<AllocationRequest>) -> Self {
        Self {
            label,
            pools,
            requests,
            per_allocation: Vec::new(),
            peak: 0,
        }
    }

    fn measure(&mut self) {
        let result = run(&self.pools, &self.requests);
        self.per_allocation.push(result.nanos_per_allocation);
        self.peak = self.peak.max(result.peak_bytes);
    }

    fn median(&self) -> f64 {
        median(self.per_allocation.clone())
    }

    fn report(&self) {
        let single = single_call_median(&self.pools, &self.requests);
        println!(
            "{:<26} {:>6} Services: median {:>5.0} ns/allocation over {RUNS} runs (single-call median {:>4.0} ns), peak heap {:.1} MiB ({:.0} bytes/Service)",
            self.label,
            self.requests.len(),
            self.median(),
            single,
            self.peak as f64 / (1024.0 * 1024.0),
            self.peak as f64 / self.requests.len() as f64,
        );
    }
}

fn main() {
    // Cargo passes --bench; nothing to parse.
    let requests = requests();
    let sample: Vec<IpAddr> = {
        let mut allocator = Allocator::new(pools("2001:db8::/64"));
        requests[..3]
            .iter()
            .flat_map(|r| {
                allocator
                    .allocate(r)
                    .map(|a| a.addresses)
                    .unwrap_or_default()
            })
            .collect()
    };
    println!(
        "allocator bench: {SERVICES} Services (70% IPv4, 20% IPv6, 10% PreferDualStack; 10% sharing), first: {sample:?}"
    );
    // Single-family runs compare an IPv4 /16 with an IPv6 /48 directly.
    let single_family = |family: IpFamily| -> Vec<AllocationRequest> {
        requests
            .iter()
            .take(60_000)
            .map(|r| AllocationRequest {
                families: FamilyPolicy::SingleStack(family),
                ..r.clone()
            })
            .collect()
    };
    let v6_slash48 =
        AddressSet::parse(["2001:db8:1::/48"]).unwrap_or_else(|e| panic!("bench pool: {e:?}"));
    let mut scenarios = [
        Scenario::new(
            "2 x IPv4 /16 + IPv6 /64",
            pools("2001:db8::/64"),
            requests.clone(),
        ),
        Scenario::new(
            "2 x IPv4 /16 + IPv6 /48",
            pools("2001:db8:1::/48"),
            requests.clone(),
        ),
        Scenario::new(
            "IPv4 only, one /16",
            vec![PoolConfig::new(
                "v4",
                AddressSet::from_ranges([numeric_v4_range(1)]),
            )],
            single_family(IpFamily::IPv4),
        ),
        Scenario::new(
            "IPv6 only, one /48",
            vec![PoolConfig::new("v6", v6_slash48)],
            single_family(IpFamily::IPv6),
        ),
    ];
    // One discarded warm-up round (page faults, allocator caches), then interleaved runs so that
    // noise from other processes hits every scenario alike.
    for scenario in &mut scenarios {
        run(&scenario.pools, &scenario.requests);
    }
    for _ in 0..RUNS {
        for scenario in &mut scenarios {
            scenario.measure();
        }
    }
    for scenario in &scenarios {
        scenario.report();
    }
    println!(
        "ratio /48 : /64 (mixed workload)  time {:.3}, peak memory {:.3}",
        scenarios[1].median() / scenarios[0].median(),
        scenarios[1].peak as f64 / scenarios[0].peak as f64,
    );
    println!(
        "ratio /48 : /16 (single family)   time {:.3}, peak memory {:.3}",
        scenarios[3].median() / scenarios[2].median(),
        scenarios[3].peak as f64 / scenarios[2].peak as f64,
    );
}
