//! Policy hot paths: new-flow evaluation (compiled vs the naive reference, same run), domain
//! matching against 100,000 names, and country lookup (our table vs maxminddb directly).
//!
//! `cargo bench -p natfw-bench --bench policy -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use natfw_bench::{service_name, synthetic_firewall, synthetic_flows, synthetic_patterns, Rng};
use natfw_policy::compile::CompiledPolicy;
use natfw_policy::domain::DomainSet;
use natfw_policy::geo::GeoDb;
use natfw_policy::naive_evaluate;

fn evaluation(c: &mut Criterion) {
    let mut g = c.benchmark_group("new_flow");
    for n in [100usize, 1_000, 10_000] {
        let fw = synthetic_firewall(n, 42);
        let compiled = CompiledPolicy::new(&fw);
        let flows = synthetic_flows(&fw, 4096, 7);
        let dns: Vec<Vec<&str>> = flows.iter().map(|f| f.dns_refs()).collect();
        let facts: Vec<_> = flows.iter().zip(&dns).map(|(f, d)| f.facts(d)).collect();
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("compiled", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % facts.len();
                black_box(compiled.evaluate(black_box(&facts[i])))
            })
        });
        g.bench_with_input(BenchmarkId::new("naive", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % facts.len();
                black_box(naive_evaluate(&fw, black_box(&facts[i])))
            })
        });
    }
    g.finish();
}

fn domains(c: &mut Criterion) {
    const N: usize = 100_000;
    let mut set = DomainSet::new();
    for (i, p) in synthetic_patterns(N, 3).iter().enumerate() {
        set.insert(p, i as u32);
    }
    // Hits on exact names, names below wildcards (4 labels) and misses, mixed.
    let mut rng = Rng::new(9);
    let queries: Vec<String> = (0..4096)
        .map(|_| {
            let i = rng.below(N as u64 * 2);
            if rng.pct(50) {
                service_name(i)
            } else {
                format!("www.{}", service_name(i))
            }
        })
        .collect();
    let mut i = 0;
    c.bench_function("domain_match_100k", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            let mut hits = 0u32;
            set.for_each_match(black_box(&queries[i]), |v| hits += v.len() as u32);
            black_box(hits)
        })
    });
}

#[derive(serde::Deserialize)]
struct Rec<'a> {
    #[serde(borrow)]
    country_code: Option<&'a str>,
}

fn geo(c: &mut Criterion) {
    let db = GeoDb::embedded();
    let reader = maxminddb::Reader::from_source(GeoDb::embedded_bytes()).expect("valid mmdb");
    let mut rng = Rng::new(5);
    let addrs: Vec<IpAddr> = (0..4096)
        .map(|_| {
            if rng.pct(80) {
                IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32))
            } else {
                IpAddr::V6((0x2000_u128 << 112 | u128::from(rng.next_u64()) << 64).into())
            }
        })
        .collect();
    let mut g = c.benchmark_group("country_lookup");
    let mut i = 0;
    g.bench_function("table", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(db.lookup(black_box(addrs[i])))
        })
    });
    g.bench_function("maxminddb", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            let r: Option<Rec<'_>> = reader.lookup(black_box(addrs[i])).ok().flatten();
            black_box(r.and_then(|r| r.country_code).map(str::len))
        })
    });
    g.finish();
}

criterion_group!(benches, evaluation, domains, geo);
criterion_main!(benches);
