//! The gateway's own DNS, on one thread of its own ("natfw-dns", a single-threaded tokio
//! runtime), never on the packet worker:
//! - [`resolve`]: resolves every exact name used by a rule in a `dns`, `fqdn_or_dns` or
//!   `fqdn_and_dns` mode through `dns.resolvers` (A and AAAA, CNAME chains followed), refreshed by
//!   TTL within a floor and a ceiling, at most `dns.max_names` names and 500 addresses a name;
//!   a reload adds and drops names. It also answers the engine's on-demand requests (the name a
//!   flow presents to an `fqdn_and_dns` rule), with bounded concurrency and a timeout.
//! - [`forwarder`]: optional; answers the VPC's queries on `dns.forwarder.listen` by forwarding
//!   them upstream and records each answer for the client that asked.
//!
//! Results reach the engine as plain data ([`DnsUpdate`]) through a bounded channel that the
//! packet worker drains before it handles a frame ([`DnsLink::apply`]); the engine stays
//! sans-I/O. A forwarded answer is handed to that channel before it is sent to the client, so
//! the client's next packet always finds it.

pub mod forwarder;
pub mod resolve;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use natfw_engine::engine::{Engine, ResolveOutcome};
use natfw_engine::time::Timestamp;
use natfw_policy::compile::CompiledPolicy;
use natfw_policy::DnsConfig;

/// Capacity of the channel from the DNS thread to the packet worker.
pub const UPDATE_CHANNEL: usize = 65_536;

/// What the DNS thread tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsUpdate {
    /// The gateway resolved `name` (a gateway-scoped fact).
    Resolved {
        name: Arc<str>,
        outcome: ResolveOutcome,
    },
    /// No rule uses `name` any more.
    Forget { name: Arc<str> },
    /// The forwarder relayed an answer to `client`: `name` resolves to each (address, TTL).
    Answer {
        client: IpAddr,
        name: String,
        answers: Vec<(IpAddr, u32)>,
    },
}

/// Counters of the DNS thread (read by the metrics exporter).
#[derive(Debug, Default)]
pub struct DnsStats {
    /// Resolutions of rule names that gave an answer (possibly empty: NXDOMAIN).
    pub rule_resolutions: AtomicU64,
    /// Resolutions of rule names that failed (timeout, server failure).
    pub rule_failures: AtomicU64,
    /// Names kept resolved for rules.
    pub rule_names: AtomicU64,
    /// Rule names left unresolved: over `dns.max_names`.
    pub rule_names_over_limit: AtomicU64,
    /// On-demand resolutions (flows waiting to verify their name) answered / failed.
    pub on_demand_ok: AtomicU64,
    pub on_demand_failed: AtomicU64,
    /// On-demand requests dropped: the queue to the DNS thread was full.
    pub on_demand_dropped: AtomicU64,
    /// Forwarder: queries received, answered from upstream, refused by policy, failed
    /// upstream (SERVFAIL sent), dropped (unparsable or over `max_inflight`).
    pub fwd_queries: AtomicU64,
    pub fwd_answered: AtomicU64,
    pub fwd_refused: AtomicU64,
    pub fwd_failed: AtomicU64,
    pub fwd_dropped: AtomicU64,
    /// Updates lost because the channel to the packet worker was full.
    pub updates_dropped: AtomicU64,
    /// Every rule name of the first policy has been looked up once (answer or failure).
    pub initial_done: AtomicBool,
}

impl DnsStats {
    /// (name, label, value) for the exporter.
    pub fn rows(&self) -> Vec<(&'static str, &'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            (
                "natfw_dns_resolutions_total",
                "rule_ok",
                g(&self.rule_resolutions),
            ),
            (
                "natfw_dns_resolutions_total",
                "rule_failed",
                g(&self.rule_failures),
            ),
            (
                "natfw_dns_resolutions_total",
                "on_demand_ok",
                g(&self.on_demand_ok),
            ),
            (
                "natfw_dns_resolutions_total",
                "on_demand_failed",
                g(&self.on_demand_failed),
            ),
            (
                "natfw_dns_resolutions_total",
                "on_demand_dropped",
                g(&self.on_demand_dropped),
            ),
            (
                "natfw_dns_forwarder_queries_total",
                "received",
                g(&self.fwd_queries),
            ),
            (
                "natfw_dns_forwarder_queries_total",
                "answered",
                g(&self.fwd_answered),
            ),
            (
                "natfw_dns_forwarder_queries_total",
                "refused",
                g(&self.fwd_refused),
            ),
            (
                "natfw_dns_forwarder_queries_total",
                "failed",
                g(&self.fwd_failed),
            ),
            (
                "natfw_dns_forwarder_queries_total",
                "dropped",
                g(&self.fwd_dropped),
            ),
            (
                "natfw_dns_updates_dropped_total",
                "",
                g(&self.updates_dropped),
            ),
            ("natfw_dns_rule_names", "", g(&self.rule_names)),
            (
                "natfw_dns_rule_names_over_limit",
                "",
                g(&self.rule_names_over_limit),
            ),
        ]
    }
}

/// The DNS thread's side of the channels to the packet workers: every worker's engine gets
/// every update (each holds the gateway's facts for the flows it owns).
#[derive(Debug, Clone)]
pub struct UpdateTx(Vec<Sender<DnsUpdate>>);

/// Hand `u` to every packet worker; counts each channel that is full (never blocks).
pub(crate) fn send_update(tx: &UpdateTx, stats: &DnsStats, u: DnsUpdate) {
    let Some((last, rest)) = tx.0.split_last() else {
        return;
    };
    for t in rest {
        if let Err(TrySendError::Full(_)) = t.try_send(u.clone()) {
            stats.updates_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Err(TrySendError::Full(_)) = last.try_send(u) {
        stats.updates_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The packet worker's end: updates to apply, on-demand requests to pass on.
#[derive(Debug)]
pub struct DnsLink {
    updates: Receiver<DnsUpdate>,
    requests: tokio::sync::mpsc::Sender<Arc<str>>,
    stats: Arc<DnsStats>,
    scratch: Vec<Arc<str>>,
}

impl DnsLink {
    /// Apply every pending update to the engine. Cheap when there is none (one atomic load).
    pub fn apply(&self, engine: &mut Engine, now: Timestamp) {
        if self.updates.is_empty() {
            return;
        }
        while let Ok(u) = self.updates.try_recv() {
            apply_update(engine, now, u);
        }
    }

    /// The next update, waiting up to `timeout` (tools and tests that watch the DNS thread
    /// without an engine).
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<DnsUpdate> {
        self.updates.recv_timeout(timeout).ok()
    }

    /// Apply updates, then pass the engine's resolution requests to the DNS thread; a request
    /// that cannot be queued fails at once (the flow's verification is unknown).
    pub fn pump(&mut self, engine: &mut Engine, now: Timestamp) {
        self.apply(engine, now);
        engine.drain_resolve_requests(&mut self.scratch);
        for name in self.scratch.drain(..) {
            if self.requests.try_send(Arc::clone(&name)).is_err() {
                self.stats.on_demand_dropped.fetch_add(1, Ordering::Relaxed);
                engine.resolution(now, &name, ResolveOutcome::Failed { retry_secs: 1 });
            }
        }
    }
}

/// Apply one update.
pub fn apply_update(engine: &mut Engine, now: Timestamp, u: DnsUpdate) {
    match u {
        DnsUpdate::Resolved { name, outcome } => engine.resolution(now, &name, outcome),
        DnsUpdate::Forget { name } => engine.forget_resolution(&name),
        DnsUpdate::Answer {
            client,
            name,
            answers,
        } => engine.learn_forwarded_answer(now, client, &name, &answers),
    }
}

/// The running DNS thread. Stops on drop.
#[derive(Debug)]
pub struct DnsService {
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub stats: Arc<DnsStats>,
    /// Where the forwarder listens (resolved port when configured as 0).
    pub forwarder_addr: Option<std::net::SocketAddr>,
}

impl DnsService {
    /// Start the DNS thread for `cfg`, following the live policy (`policy`) for rule names and
    /// refusals. Fails when the resolvers cannot be configured or the forwarder cannot bind.
    pub fn start(
        cfg: &DnsConfig,
        policy: Arc<ArcSwap<CompiledPolicy>>,
    ) -> Result<(DnsService, DnsLink), String> {
        let (svc, mut links) = DnsService::start_for(cfg, policy, 1)?;
        let link = links
            .pop()
            .ok_or_else(|| "dns: no link to the packet worker".to_string())?;
        Ok((svc, link))
    }

    /// As [`DnsService::start`], for `workers` packet workers: one link each, every update
    /// sent to all of them, requests from any.
    pub fn start_for(
        cfg: &DnsConfig,
        policy: Arc<ArcSwap<CompiledPolicy>>,
        workers: usize,
    ) -> Result<(DnsService, Vec<DnsLink>), String> {
        let upstreams = resolve::upstreams(cfg)?;
        let (txs, urxs): (Vec<_>, Vec<_>) = (0..workers.max(1))
            .map(|_| crossbeam_channel::bounded(UPDATE_CHANNEL))
            .unzip();
        let utx = UpdateTx(txs);
        let (rtx, rrx) = tokio::sync::mpsc::channel(cfg.verify_concurrency.max(1) * 4);
        let stats = Arc::new(DnsStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("dns: starting the runtime: {e}"))?;
        // Bind the forwarder here so that a bad listen address fails the start.
        let fwd_socket = match &cfg.forwarder {
            None => None,
            Some(f) => {
                let s = rt
                    .block_on(tokio::net::UdpSocket::bind(f.listen))
                    .map_err(|e| format!("dns.forwarder.listen {}: {e}", f.listen))?;
                Some(s)
            }
        };
        let forwarder_addr = fwd_socket.as_ref().and_then(|s| s.local_addr().ok());
        let thread = {
            let (cfg, stats, stop, wake) = (
                cfg.clone(),
                Arc::clone(&stats),
                Arc::clone(&stop),
                Arc::clone(&wake),
            );
            std::thread::Builder::new()
                .name("natfw-dns".into())
                .spawn(move || {
                    rt.block_on(async move {
                        let resolver = match resolve::build(&cfg, &upstreams) {
                            Ok(r) => r,
                            Err(e) => {
                                eprintln!("natfw: {e}");
                                return;
                            }
                        };
                        let local = tokio::task::LocalSet::new();
                        if let (Some(sock), Some(f)) = (fwd_socket, cfg.forwarder.clone()) {
                            local.spawn_local(forwarder::serve(
                                sock,
                                f,
                                upstreams.clone(),
                                Arc::clone(&policy),
                                utx.clone(),
                                Arc::clone(&stats),
                            ));
                        }
                        local
                            .run_until(resolve::run(
                                resolver, cfg, policy, rrx, utx, stats, stop, wake,
                            ))
                            .await;
                    });
                })
                .map_err(|e| format!("dns: spawning the thread: {e}"))?
        };
        let links = urxs
            .into_iter()
            .map(|urx| DnsLink {
                updates: urx,
                requests: rtx.clone(),
                stats: Arc::clone(&stats),
                scratch: Vec::new(),
            })
            .collect();
        Ok((
            DnsService {
                stop,
                wake,
                thread: Some(thread),
                stats,
                forwarder_addr,
            },
            links,
        ))
    }
}

impl DnsService {
    /// Wait (at most `timeout`) until every rule name of the starting policy has been looked
    /// up once, so that the first flows find their addresses. `false` on timeout.
    pub fn wait_initial(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.stats.initial_done.load(Ordering::Relaxed) {
            if std::time::Instant::now() >= deadline
                || self.thread.as_ref().is_none_or(|t| t.is_finished())
            {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }
}

impl Drop for DnsService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
