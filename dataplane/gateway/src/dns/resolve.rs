//! Gateway-side resolution: rule names kept resolved (refreshed by TTL within
//! [`DnsConfig::refresh_min_secs`], [`DnsConfig::refresh_max_secs`]) and names resolved on the
//! engine's request, through hickory-resolver.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use natfw_engine::dnscache::MAX_ADDRS_PER_NAME;
use natfw_engine::engine::ResolveOutcome;
use natfw_policy::compile::CompiledPolicy;
use natfw_policy::{DnsConfig, DomainPattern};
use tokio::time::Instant;

use super::{send_update, DnsStats, DnsUpdate, UpdateTx};

/// How long a failed on-demand name is remembered as failed by the engine.
const ON_DEMAND_RETRY_SECS: u32 = 5;
/// How often the live policy is compared with the one the names came from.
const POLICY_CHECK: Duration = Duration::from_secs(1);

/// The upstream resolvers: `dns.resolvers`, else the system's (`/etc/resolv.conf`).
pub fn upstreams(cfg: &DnsConfig) -> Result<Vec<SocketAddr>, String> {
    if !cfg.resolvers.is_empty() {
        return Ok(cfg.resolvers.clone());
    }
    let (conf, _) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| format!("dns: reading the system's resolvers (/etc/resolv.conf): {e}"))?;
    let mut out: Vec<SocketAddr> = Vec::new();
    for ns in conf.name_servers() {
        if !out.contains(&ns.socket_addr) {
            out.push(ns.socket_addr);
        }
    }
    if out.is_empty() {
        return Err("dns: /etc/resolv.conf lists no nameserver; set dns.resolvers".into());
    }
    Ok(out)
}

/// A resolver over `upstreams` (UDP, TCP on truncation), A and AAAA, no cache of its own (the
/// engine holds the facts and the refresh schedule is ours), no hosts file.
pub fn build(cfg: &DnsConfig, upstreams: &[SocketAddr]) -> Result<TokioResolver, String> {
    let servers: Vec<NameServerConfig> = upstreams
        .iter()
        .flat_map(|a| {
            [
                NameServerConfig::new(*a, Protocol::Udp),
                NameServerConfig::new(*a, Protocol::Tcp),
            ]
        })
        .collect();
    let config = ResolverConfig::from_parts(None, Vec::new(), servers);
    let mut opts = ResolverOpts::default();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.timeout = Duration::from_millis(cfg.verify_timeout_ms.clamp(100, 5_000));
    opts.attempts = 2;
    opts.ndots = 0;
    Ok(
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build(),
    )
}

/// What one lookup gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Looked {
    /// A and AAAA addresses (at most [`MAX_ADDRS_PER_NAME`]), CNAMEs followed, and the
    /// shortest TTL of the answer.
    Addrs { addrs: Vec<IpAddr>, ttl: u32 },
    /// NXDOMAIN or no A/AAAA record: the name resolves to nothing.
    NoRecords,
    /// No answer: timeout, server failure, unreachable resolver.
    Failed(String),
}

/// Resolve `name` (an exact, normalised name) within `timeout`.
pub async fn lookup(r: &TokioResolver, name: &str, timeout: Duration) -> Looked {
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    match tokio::time::timeout(timeout, r.lookup_ip(fqdn.as_str())).await {
        Err(_) => Looked::Failed("timed out".into()),
        Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => Looked::NoRecords,
        Ok(Err(e)) => Looked::Failed(e.to_string()),
        Ok(Ok(l)) => {
            let mut addrs: Vec<IpAddr> = l.iter().collect();
            addrs.sort_unstable();
            addrs.dedup();
            addrs.truncate(MAX_ADDRS_PER_NAME);
            if addrs.is_empty() {
                return Looked::NoRecords;
            }
            let ttl = l
                .valid_until()
                .saturating_duration_since(std::time::Instant::now())
                .as_secs();
            Looked::Addrs {
                addrs,
                ttl: u32::try_from(ttl).unwrap_or(u32::MAX),
            }
        }
    }
}

/// The refresh interval for a TTL: clamped to the configured floor and ceiling.
pub fn interval(cfg: &DnsConfig, ttl: u32) -> u32 {
    ttl.clamp(cfg.refresh_min_secs, cfg.refresh_max_secs)
}

/// How long the engine keeps a rule name's addresses: one interval, plus slack for the next
/// refresh to arrive (a failed refresh keeps the old addresses that long, no longer).
pub fn validity(cfg: &DnsConfig, interval: u32) -> u32 {
    let timeout = (cfg.verify_timeout_ms / 1000) as u32 + 1;
    interval
        .saturating_add(interval.min(60))
        .saturating_add(timeout)
}

/// The exact names the policy needs resolved, at most `max_names` (sorted; the rest are
/// reported in the second value).
pub fn rule_names(policy: &CompiledPolicy, max_names: usize) -> (Vec<Arc<str>>, usize) {
    let all: Vec<Arc<str>> = policy
        .dns_mode_domains()
        .into_iter()
        .filter_map(|p| match p {
            DomainPattern::Exact(n) => Some(Arc::from(n.as_str())),
            DomainPattern::Wildcard(_) => None,
        })
        .collect();
    let over = all.len().saturating_sub(max_names);
    (all.into_iter().take(max_names).collect(), over)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rule,
    OnDemand,
}

/// The resolution loop: keeps the live policy's rule names resolved and serves on-demand
/// requests, until `stop`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    resolver: TokioResolver,
    cfg: DnsConfig,
    policy: Arc<ArcSwap<CompiledPolicy>>,
    mut requests: tokio::sync::mpsc::Receiver<Arc<str>>,
    updates: UpdateTx,
    stats: Arc<DnsStats>,
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
) {
    let resolver = Arc::new(resolver);
    let timeout = Duration::from_millis(cfg.verify_timeout_ms);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(Arc<str>, Kind, Looked)>();
    // Rule names and when each is due.
    let mut due: HashMap<Arc<str>, Instant> = HashMap::new();
    let mut rule_inflight: HashSet<Arc<str>> = HashSet::new();
    let mut od_inflight: HashSet<Arc<str>> = HashSet::new();
    let mut last: Option<Arc<CompiledPolicy>> = None;
    // Rule names of the first policy not looked up yet.
    let mut first_round: Option<HashSet<Arc<str>>> = None;
    let mut last_check = Instant::now() - POLICY_CHECK;
    let spawn = |name: Arc<str>, kind: Kind| {
        let (r, tx) = (Arc::clone(&resolver), done_tx.clone());
        // A rule-name refresh is not waited for by a flow: give it the resolver's full time.
        let t = match kind {
            Kind::Rule => timeout.max(Duration::from_secs(5)),
            Kind::OnDemand => timeout,
        };
        tokio::task::spawn_local(async move {
            let looked = lookup(&r, &name, t).await;
            let _ = tx.send((name, kind, looked));
        });
    };
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now.duration_since(last_check) >= POLICY_CHECK {
            last_check = now;
            let cur = policy.load_full();
            if last.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &cur)) {
                let (names, over) = rule_names(&cur, cfg.max_names);
                if over > 0 {
                    eprintln!(
                        "natfw: dns: {over} rule names over dns.max_names ({}) are not resolved by the gateway",
                        cfg.max_names
                    );
                }
                stats
                    .rule_names_over_limit
                    .store(over as u64, Ordering::Relaxed);
                let keep: HashSet<&Arc<str>> = names.iter().collect();
                let gone: Vec<Arc<str>> =
                    due.keys().filter(|n| !keep.contains(n)).cloned().collect();
                for n in gone {
                    due.remove(&n);
                    send_update(&updates, &stats, DnsUpdate::Forget { name: n });
                }
                for n in names {
                    due.entry(n).or_insert(now);
                }
                stats.rule_names.store(due.len() as u64, Ordering::Relaxed);
                if first_round.is_none() {
                    first_round = Some(due.keys().cloned().collect());
                }
                last = Some(cur);
            }
        }
        if first_round.as_ref().is_some_and(HashSet::is_empty) {
            stats.initial_done.store(true, Ordering::Relaxed);
        }
        let mut next = now + POLICY_CHECK;
        for (name, at) in &due {
            if rule_inflight.contains(name) {
                continue;
            }
            if *at <= now {
                rule_inflight.insert(Arc::clone(name));
                spawn(Arc::clone(name), Kind::Rule);
            } else {
                next = next.min(*at);
            }
        }
        tokio::select! {
            Some(name) = requests.recv() => {
                if od_inflight.insert(Arc::clone(&name)) {
                    spawn(name, Kind::OnDemand);
                }
            }
            Some((name, kind, looked)) = done_rx.recv() => {
                let now = Instant::now();
                match kind {
                    Kind::Rule => {
                        rule_inflight.remove(&name);
                        if let Some(f) = &mut first_round {
                            f.remove(&name);
                        }
                        let Some(at) = due.get_mut(&name) else {
                            continue; // dropped by a reload meanwhile
                        };
                        let (outcome, every) = match looked {
                            Looked::Addrs { addrs, ttl } => {
                                let i = interval(&cfg, ttl);
                                (Some((addrs, validity(&cfg, i))), i)
                            }
                            Looked::NoRecords => {
                                let i = cfg.refresh_min_secs;
                                (Some((Vec::new(), i)), i)
                            }
                            Looked::Failed(_) => (None, cfg.refresh_min_secs),
                        };
                        *at = now + Duration::from_secs(u64::from(every));
                        match outcome {
                            Some((addrs, valid_secs)) => {
                                stats.rule_resolutions.fetch_add(1, Ordering::Relaxed);
                                let outcome = ResolveOutcome::Addresses { addrs, valid_secs };
                                send_update(&updates, &stats, DnsUpdate::Resolved { name, outcome });
                            }
                            None => {
                                stats.rule_failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Kind::OnDemand => {
                        od_inflight.remove(&name);
                        let outcome = match looked {
                            Looked::Addrs { addrs, ttl } => ResolveOutcome::Addresses {
                                addrs,
                                valid_secs: interval(&cfg, ttl),
                            },
                            Looked::NoRecords => ResolveOutcome::Addresses {
                                addrs: Vec::new(),
                                valid_secs: cfg.refresh_min_secs,
                            },
                            Looked::Failed(_) => ResolveOutcome::Failed {
                                retry_secs: ON_DEMAND_RETRY_SECS,
                            },
                        };
                        let counter = match outcome {
                            ResolveOutcome::Failed { .. } => &stats.on_demand_failed,
                            ResolveOutcome::Addresses { .. } => &stats.on_demand_ok,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        send_update(&updates, &stats, DnsUpdate::Resolved { name, outcome });
                    }
                }
            }
            _ = tokio::time::sleep_until(next) => {}
            _ = wake.notified() => {}
        }
    }
}
