//! Prometheus metrics: what the gateway counts, published from stats snapshots.
//!
//! The data path never touches the `metrics` crate: it keeps plain `u64` counters
//! ([`natfw_engine::stats::EngineStats`], [`crate::afxdp::IoStats`], the XDP per-CPU array) and the
//! control thread copies a [`Snapshot`] of them into the recorder about once a second
//! ([`Metrics::publish`]). The exporter ([`Metrics::render`]) is served by the admin module's
//! HTTP listener on `metrics.listen`. Every metric is documented in docs/OPERATIONS.md.

use std::collections::HashMap;

use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::afxdp::IoStats;
use crate::xdp::Counters as XdpCounters;
use natfw_engine::stats::{Counter, EngineStats};

/// The port `metrics.listen` uses when only an address is wanted (docs, packaged config): not
/// 9100, which is node_exporter's.
pub const DEFAULT_PORT: u16 = 9469;

/// natfw's version and the git commit it was built from (`natfw_build_info`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT: &str = env!("NATFW_GIT");

/// Whether a series is a counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Every series natfw exports: name, type and the HELP text (docs/OPERATIONS.md has the same
/// list with the labels).
pub const SERIES: &[(&str, Kind, &str)] = &[
    (
        "natfw_build_info",
        Kind::Gauge,
        "Always 1; the version and git commit natfw was built from.",
    ),
    (
        "natfw_packets_total",
        Kind::Counter,
        "Packets handled by the engine, by direction and action.",
    ),
    (
        "natfw_bytes_total",
        Kind::Counter,
        "Bytes handled by the engine, by direction and action.",
    ),
    (
        "natfw_dropped_packets_total",
        Kind::Counter,
        "Packets dropped by the engine, by reason.",
    ),
    (
        "natfw_dropped_bytes_total",
        Kind::Counter,
        "Bytes of packets dropped by the engine, by reason.",
    ),
    ("natfw_flows_created_total", Kind::Counter, "Flows created."),
    (
        "natfw_flows_ended_total",
        Kind::Counter,
        "Flows ended, by reason.",
    ),
    ("natfw_flows_active", Kind::Gauge, "Flows tracked now."),
    (
        "natfw_fastpath_flows",
        Kind::Gauge,
        "Flows the in-kernel fast path forwards now.",
    ),
    (
        "natfw_fastpath_packets_total",
        Kind::Counter,
        "Packets the in-kernel fast path forwarded (read back from its table).",
    ),
    (
        "natfw_fastpath_offloads_total",
        Kind::Counter,
        "Flows handed to the fast path (added), taken back (removed), refused by its table (failed), handed over to the next process (handed_over) or adopted from the previous one (adopted).",
    ),
    (
        "natfw_flows_table_full_total",
        Kind::Counter,
        "New flows refused because the table was full of non-evictable flows.",
    ),
    (
        "natfw_flows_evicted_total",
        Kind::Counter,
        "Flows evicted to make room.",
    ),
    (
        "natfw_held_payload_bytes",
        Kind::Gauge,
        "Client payload bytes held now while a verdict is pending.",
    ),
    (
        "natfw_l7_buffered_bytes",
        Kind::Gauge,
        "L7 reassembly bytes buffered now.",
    ),
    (
        "natfw_policy_evaluations_total",
        Kind::Counter,
        "Policy evaluations.",
    ),
    (
        "natfw_l7_outcomes_total",
        Kind::Counter,
        "L7 identification outcomes.",
    ),
    (
        "natfw_dns_answers_forwarded_total",
        Kind::Counter,
        "Addresses learned from answers the DNS forwarder relayed (client-scoped facts).",
    ),
    (
        "natfw_dns_verifications_total",
        Kind::Counter,
        "fqdn_and_dns on-demand verification: names requested, flows that waited, timeouts, refusals.",
    ),
    (
        "natfw_dns_gateway_names",
        Kind::Gauge,
        "Names the engine holds from the gateway's own resolution.",
    ),
    (
        "natfw_dns_gateway_names_full_total",
        Kind::Counter,
        "Resolution results not stored because the engine's bound on names was reached.",
    ),
    (
        "natfw_dns_resolutions_total",
        Kind::Counter,
        "The DNS thread's lookups, by kind (rule names, on-demand) and result.",
    ),
    (
        "natfw_dns_rule_names",
        Kind::Gauge,
        "Rule names the gateway keeps resolved.",
    ),
    (
        "natfw_dns_rule_names_over_limit",
        Kind::Gauge,
        "Rule names left unresolved: over dns.max_names.",
    ),
    (
        "natfw_dns_forwarder_queries_total",
        Kind::Counter,
        "DNS forwarder queries: received, answered, refused, failed, dropped.",
    ),
    (
        "natfw_dns_updates_dropped_total",
        Kind::Counter,
        "Facts from the DNS thread lost because the channel to the packet worker was full.",
    ),
    (
        "natfw_dns_answers_learned_total",
        Kind::Counter,
        "DNS answers learned into the DNS cache.",
    ),
    (
        "natfw_flowlog_records_total",
        Kind::Counter,
        "Flow records handed to the flow-log writer.",
    ),
    (
        "natfw_flowlog_dropped_total",
        Kind::Counter,
        "Flow records dropped because the writer could not keep up.",
    ),
    (
        "natfw_flowlog_write_errors_total",
        Kind::Counter,
        "Flow records whose write failed (disk full with nothing left to delete, I/O errors).",
    ),
    (
        "natfw_flowlog_space_freed_total",
        Kind::Counter,
        "Rotated flow-log files deleted to make room on a full disk.",
    ),
    (
        "natfw_interim_records_total",
        Kind::Counter,
        "Interim records of live flows (logging.interim_interval) handed to the flow log.",
    ),
    (
        "natfw_syslog_records_total",
        Kind::Counter,
        "Flow records handed to the remote syslog sink.",
    ),
    (
        "natfw_syslog_sent_total",
        Kind::Counter,
        "Flow records sent to the syslog receiver.",
    ),
    (
        "natfw_syslog_dropped_total",
        Kind::Counter,
        "Flow records the syslog sink dropped (queue full while the receiver was away or slow; undelivered at shutdown).",
    ),
    (
        "natfw_syslog_queued",
        Kind::Gauge,
        "Flow records waiting in the syslog sink's queue.",
    ),
    (
        "natfw_syslog_connected",
        Kind::Gauge,
        "1 while the syslog sink is connected to its receiver.",
    ),
    (
        "natfw_syslog_connects_total",
        Kind::Counter,
        "Connections the syslog sink established (the first and every reconnection).",
    ),
    (
        "natfw_resets_no_flow_total",
        Kind::Counter,
        "Mid-stream TCP segments from the inside of no flow, answered with a RST.",
    ),
    (
        "natfw_guard_dropped_packets_total",
        Kind::Counter,
        "Packets dropped by the nftables guard, by reason.",
    ),
    (
        "natfw_guard_dropped_bytes_total",
        Kind::Counter,
        "Bytes dropped by the nftables guard, by reason.",
    ),
    (
        "natfw_afxdp_kernel_total",
        Kind::Counter,
        "The kernel's AF_XDP socket statistics (ring drops, invalid descriptors).",
    ),
    (
        "natfw_default_route_up",
        Kind::Gauge,
        "1 while a default route leads out of the outside interface.",
    ),
    (
        "natfw_default_route_restored_total",
        Kind::Counter,
        "Default routes natfw put back after the outside link lost them.",
    ),
    (
        "natfw_policy_reloads_total",
        Kind::Counter,
        "Policy reloads (SIGHUP or PUT /v1/policy), by result.",
    ),
    (
        "natfw_rule_hits_total",
        Kind::Counter,
        "Flows decided by each rule.",
    ),
    (
        "natfw_rule_bytes_total",
        Kind::Counter,
        "Bytes (out + in) of ended flows decided by each rule.",
    ),
    (
        "natfw_xdp_packets_total",
        Kind::Counter,
        "XDP program counters per interface, summed over CPUs.",
    ),
    (
        "natfw_xdp_steered_worker_packets_total",
        Kind::Counter,
        "Split mode: packets tc steered to one packet worker's slow path, per interface.",
    ),
    (
        "natfw_xdp_steered_broadcast_packets_total",
        Kind::Counter,
        "Split mode: packets tc copied to every packet worker's slow path, per interface.",
    ),
    (
        "natfw_afxdp_rx_frames_total",
        Kind::Counter,
        "Frames received from the AF_XDP RX rings.",
    ),
    (
        "natfw_afxdp_tx_frames_total",
        Kind::Counter,
        "Frames put on the AF_XDP TX rings.",
    ),
    (
        "natfw_afxdp_frames_total",
        Kind::Counter,
        "AF_XDP loop events, by event.",
    ),
    (
        "natfw_flows_tuple_reused_total",
        Kind::Counter,
        "Client SYNs that reused the tuple of a closed or closing flow: a new flow began.",
    ),
    (
        "natfw_closed_flow_strays_total",
        Kind::Counter,
        "Segments for a closed flow that were not its stragglers, dropped.",
    ),
    (
        "natfw_pre_name_released_packets_total",
        Kind::Counter,
        "ClientHello segments sent on while the verdict waited, wholly before the server_name.",
    ),
    (
        "natfw_worker_heartbeats_total",
        Kind::Counter,
        "Turns of the slowest packet worker's loop (the systemd watchdog is fed only while it grows).",
    ),
    (
        "natfw_worker_frames_total",
        Kind::Counter,
        "Frames each packet worker's engine processed, by worker.",
    ),
    (
        "natfw_worker_flows",
        Kind::Gauge,
        "Flows each packet worker's engine tracks, by worker.",
    ),
    (
        "natfw_worker_other_packets_total",
        Kind::Counter,
        "Copies of packets another worker owns (fragments, ICMP errors given to every worker), ignored.",
    ),
    (
        "natfw_worker_dns_facts_total",
        Kind::Counter,
        "DNS facts passed between packet workers: learned from another worker, or lost (queue full).",
    ),
];

/// One packet worker's figures ([`Snapshot::workers`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStat {
    pub frames: u64,
    pub flows: u64,
    pub heartbeats: u64,
    /// DNS facts it could not pass to another worker.
    pub answers_lost: u64,
}

/// Label used for flows decided by the default action.
pub const DEFAULT_RULE: &str = "(default)";

/// Hits of one rule, read from the policy's counters ([`natfw_policy::counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleStat {
    /// Flows this rule decided.
    pub hits: u64,
    /// Bytes (out + in) of those flows that have ended.
    pub bytes: u64,
    /// When it last decided a flow (RFC 3339).
    pub last_hit: Option<String>,
}

impl From<natfw_policy::counters::RuleCount> for RuleStat {
    fn from(c: natfw_policy::counters::RuleCount) -> RuleStat {
        RuleStat {
            hits: c.hits,
            bytes: c.bytes,
            last_hit: c
                .last_hit_ns
                .map(|ns| natfw_flowlog::format_rfc3339_millis(natfw_engine::time::Timestamp(ns))),
        }
    }
}

/// Every rule's totals in `policy`, by name, plus [`DEFAULT_RULE`].
pub fn rule_stats(policy: &natfw_policy::compile::CompiledPolicy) -> HashMap<String, RuleStat> {
    let c = policy.counters();
    let mut m: HashMap<String, RuleStat> = policy
        .rules()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let id = natfw_policy::RuleId(i as u32);
            (r.name.clone(), c.get(Some(id)).get().into())
        })
        .collect();
    m.insert(DEFAULT_RULE.to_string(), c.default_action().get().into());
    m
}

/// The remote syslog sink's counters at one moment (see [`crate::syslog::SyslogCounters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyslogStat {
    pub records: u64,
    pub sent: u64,
    pub dropped: u64,
    pub queued: u64,
    pub connected: bool,
    pub connects: u64,
    pub last_error: Option<String>,
}

impl SyslogStat {
    pub fn of(c: &crate::syslog::SyslogCounters) -> SyslogStat {
        use std::sync::atomic::Ordering::Relaxed;
        SyslogStat {
            records: c.offered.load(Relaxed),
            sent: c.sent.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            queued: c.queued.load(Relaxed),
            connected: c.connected.load(Relaxed),
            connects: c.connects.load(Relaxed),
            last_error: c.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }
}

/// Everything published at once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub engine: EngineStats,
    pub io: IoStats,
    /// XDP counters per interface name.
    pub xdp: Vec<(String, XdpCounters)>,
    pub rules: HashMap<String, RuleStat>,
    /// Flow records handed to the writer, and lost: `flowlog_dropped` = dropped because the
    /// writer could not keep up + failed writes (`flowlog_write_failed`).
    pub flowlog_records: u64,
    pub flowlog_dropped: u64,
    pub flowlog_write_failed: u64,
    /// Rotated flow-log files deleted to make room on a full disk.
    pub flowlog_space_freed: u64,
    /// The latest flow-log write error.
    pub flowlog_last_error: Option<String>,
    /// The remote syslog sink, if configured.
    pub syslog: Option<SyslogStat>,
    /// Drops of the nftables guard (`inet natfw_guard`).
    pub guard: crate::guard::GuardCounters,
    /// Kernel statistics of the AF_XDP sockets, per side (`inside`, `outside`).
    pub xsk: Vec<(&'static str, crate::xsk_stats::XskStats)>,
    /// Per IP family with EIPs (`ipv4`, `ipv6`): is there a default route out of the outside
    /// interface?
    pub default_route: Vec<(&'static str, bool)>,
    /// Default routes natfw put back after the outside link lost them.
    pub default_route_restored: u64,
    /// Policy reloads (SIGHUP or admin API) that applied, and that failed.
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Turns of the slowest packet worker's loop so far.
    pub heartbeats: u64,
    /// Each packet worker's figures, index = worker.
    pub workers: Vec<WorkerStat>,
    /// The DNS thread's counters: (metric, `kind` label or "", value); see
    /// [`crate::dns::DnsStats::rows`].
    pub dns: Vec<(&'static str, &'static str, u64)>,
}

/// The recorder and its Prometheus rendering.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn pair(
    name_p: &'static str,
    name_b: &'static str,
    labels: &[(&'static str, &'static str)],
    c: Counter,
) {
    let l: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, *v))
        .collect();
    counter!(name_p, l.clone()).absolute(c.packets);
    counter!(name_b, l).absolute(c.bytes);
}

impl Metrics {
    /// A local recorder (not installed globally: several instances may coexist in tests).
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for (name, kind, help) in SERIES {
                match kind {
                    Kind::Counter => describe_counter!(*name, *help),
                    Kind::Gauge => describe_gauge!(*name, *help),
                }
            }
            gauge!("natfw_build_info", "version" => VERSION, "git" => GIT).set(1.0);
        });
        Metrics { recorder, handle }
    }

    /// Prometheus text exposition of the last published snapshot.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Copy `s` into the recorder.
    pub fn publish(&self, s: &Snapshot) {
        metrics::with_local_recorder(&self.recorder, || publish(s));
    }
}

fn publish(s: &Snapshot) {
    counter!("natfw_worker_heartbeats_total").absolute(s.heartbeats);
    for (i, w) in s.workers.iter().enumerate() {
        let worker = i.to_string();
        counter!("natfw_worker_frames_total", "worker" => worker.clone()).absolute(w.frames);
        gauge!("natfw_worker_flows", "worker" => worker).set(w.flows as f64);
    }
    counter!("natfw_worker_other_packets_total").absolute(s.engine.other_worker.packets);
    let lost: u64 =
        s.workers.iter().map(|w| w.answers_lost).sum::<u64>() + s.engine.dns_answers_share_dropped;
    counter!("natfw_worker_dns_facts_total", "result" => "learned")
        .absolute(s.engine.dns_answers_shared);
    counter!("natfw_worker_dns_facts_total", "result" => "lost").absolute(lost);
    let e = &s.engine;
    let (p, b) = ("natfw_packets_total", "natfw_bytes_total");
    pair(
        p,
        b,
        &[("direction", "out"), ("action", "forward")],
        e.fwd_out,
    );
    pair(
        p,
        b,
        &[("direction", "in"), ("action", "forward")],
        e.fwd_in,
    );
    pair(
        p,
        b,
        &[("direction", "out"), ("action", "kernel")],
        e.to_kernel,
    );
    pair(
        p,
        b,
        &[("direction", "out"), ("action", "bypass")],
        e.bypassed,
    );
    pair(p, b, &[("direction", "out"), ("action", "hold")], e.held);
    pair(
        p,
        b,
        &[("direction", "out"), ("action", "release")],
        e.released,
    );
    pair(
        p,
        b,
        &[("direction", "out"), ("action", "discard")],
        e.discarded,
    );
    pair(p, b, &[("direction", "any"), ("action", "emit")], e.emitted);
    pair(
        p,
        b,
        &[("direction", "out"), ("action", "receive")],
        e.rx_inside,
    );
    pair(
        p,
        b,
        &[("direction", "in"), ("action", "receive")],
        e.rx_outside,
    );
    let (dp, db) = ("natfw_dropped_packets_total", "natfw_dropped_bytes_total");
    for (reason, c) in [
        ("parse", e.drop_parse),
        ("fragment", e.drop_fragment),
        ("policy", e.drop_policy),
        ("no_flow", e.drop_no_flow),
        ("no_port", e.drop_no_port),
        ("table_full", e.drop_table_full),
        ("hold_full", e.drop_hold_full),
        ("invalid_state", e.drop_invalid_state),
        ("unsupported", e.drop_unsupported),
        ("evasion", e.drop_evasion),
    ] {
        pair(dp, db, &[("reason", reason)], c);
    }
    counter!("natfw_flows_created_total").absolute(e.flows_created);
    for (reason, n) in [
        ("fin", e.flows_ended_fin),
        ("rst", e.flows_ended_rst),
        ("timeout", e.flows_ended_timeout),
        ("denied", e.flows_ended_denied),
        ("evicted", e.flows_ended_evicted),
        ("shutdown", e.flows_ended_shutdown),
    ] {
        counter!("natfw_flows_ended_total", "reason" => reason).absolute(n);
    }
    gauge!("natfw_flows_active").set(e.flows_active as f64);
    gauge!("natfw_fastpath_flows").set(e.offload_active as f64);
    counter!("natfw_fastpath_packets_total").absolute(e.offload_forwarded.packets);
    for (event, n) in [
        ("added", e.offload_added),
        ("removed", e.offload_removed),
        ("failed", e.offload_add_failed),
        ("handed_over", e.offload_handed_over),
        ("adopted", e.offload_adopted),
    ] {
        counter!("natfw_fastpath_offloads_total", "event" => event).absolute(n);
    }
    counter!("natfw_flows_table_full_total").absolute(e.table_full);
    counter!("natfw_flows_evicted_total").absolute(e.evictions);
    counter!("natfw_flows_tuple_reused_total").absolute(e.tuple_reuses);
    counter!("natfw_closed_flow_strays_total").absolute(e.closed_flow_strays);
    counter!("natfw_pre_name_released_packets_total").absolute(e.pre_name_released.packets);
    gauge!("natfw_held_payload_bytes").set(e.held_bytes as f64);
    gauge!("natfw_l7_buffered_bytes").set(e.l7_bytes as f64);
    counter!("natfw_policy_evaluations_total").absolute(e.policy_evaluations);
    for (outcome, n) in [
        ("domain_found", e.l7_domain_found),
        ("app_found", e.l7_app_found),
        ("unidentifiable", e.l7_unidentifiable),
        ("timeout", e.l7_timeouts),
        ("conflict", e.l7_conflicts),
    ] {
        counter!("natfw_l7_outcomes_total", "outcome" => outcome).absolute(n);
    }
    counter!("natfw_dns_answers_learned_total").absolute(e.dns_answers_learned);
    counter!("natfw_dns_answers_forwarded_total").absolute(e.dns_answers_forwarded);
    for (outcome, n) in [
        ("requested", e.dns_resolve_requests),
        ("waited", e.dns_resolve_waits),
        ("timeout", e.dns_resolve_timeouts),
        ("refused", e.dns_resolve_refused),
    ] {
        counter!("natfw_dns_verifications_total", "outcome" => outcome).absolute(n);
    }
    gauge!("natfw_dns_gateway_names").set(e.dns_gateway_names as f64);
    counter!("natfw_dns_gateway_names_full_total").absolute(e.dns_gateway_names_full);
    for &(name, kind, n) in &s.dns {
        match (name.ends_with("_total"), kind.is_empty()) {
            (true, true) => counter!(name).absolute(n),
            (true, false) => counter!(name, "kind" => kind).absolute(n),
            (false, _) => gauge!(name).set(n as f64),
        }
    }

    counter!("natfw_flowlog_records_total").absolute(s.flowlog_records);
    counter!("natfw_flowlog_dropped_total").absolute(s.flowlog_dropped);
    counter!("natfw_flowlog_write_errors_total").absolute(s.flowlog_write_failed);
    counter!("natfw_flowlog_space_freed_total").absolute(s.flowlog_space_freed);
    counter!("natfw_resets_no_flow_total").absolute(e.resets_no_flow);
    counter!("natfw_interim_records_total").absolute(e.interim_records);
    if let Some(y) = &s.syslog {
        counter!("natfw_syslog_records_total").absolute(y.records);
        counter!("natfw_syslog_sent_total").absolute(y.sent);
        counter!("natfw_syslog_dropped_total").absolute(y.dropped);
        gauge!("natfw_syslog_queued").set(y.queued as f64);
        gauge!("natfw_syslog_connected").set(f64::from(u8::from(y.connected)));
        counter!("natfw_syslog_connects_total").absolute(y.connects);
    }
    for (reason, (p, b)) in [
        ("snat_unsteered", s.guard.snat_unsteered),
        ("not_snat", s.guard.not_snat),
        ("inbound_unsolicited", s.guard.inbound_unsolicited),
    ] {
        counter!("natfw_guard_dropped_packets_total", "reason" => reason).absolute(p);
        counter!("natfw_guard_dropped_bytes_total", "reason" => reason).absolute(b);
    }
    for (side, x) in &s.xsk {
        for (what, n) in [
            ("rx_dropped", x.rx_dropped),
            ("rx_ring_full", x.rx_ring_full),
            ("rx_fill_ring_empty", x.rx_fill_ring_empty_descs),
            ("rx_invalid_descs", x.rx_invalid_descs),
            ("tx_invalid_descs", x.tx_invalid_descs),
        ] {
            counter!("natfw_afxdp_kernel_total", "side" => *side, "event" => what).absolute(n);
        }
    }
    for (family, ok) in &s.default_route {
        gauge!("natfw_default_route_up", "family" => *family).set(if *ok { 1.0 } else { 0.0 });
    }
    counter!("natfw_default_route_restored_total").absolute(s.default_route_restored);
    counter!("natfw_policy_reloads_total", "result" => "ok").absolute(s.reloads_ok);
    counter!("natfw_policy_reloads_total", "result" => "error").absolute(s.reloads_failed);

    for (name, r) in &s.rules {
        counter!("natfw_rule_hits_total", "rule" => name.clone()).absolute(r.hits);
        counter!("natfw_rule_bytes_total", "rule" => name.clone()).absolute(r.bytes);
    }

    for (iface, c) in &s.xdp {
        for k in crate::xdp::Counter::ALL {
            if k.is_distribution() {
                continue;
            }
            counter!("natfw_xdp_packets_total", "iface" => iface.clone(), "counter" => k.name())
                .absolute(c.get(k));
        }
        for w in 0..c.workers_seen() {
            let Some(k) = crate::xdp::Counter::steered_worker(w) else {
                continue;
            };
            counter!("natfw_xdp_steered_worker_packets_total", "iface" => iface.clone(), "worker" => w.to_string())
                .absolute(c.get(k));
        }
        counter!("natfw_xdp_steered_broadcast_packets_total", "iface" => iface.clone())
            .absolute(c.get(crate::xdp::Counter::SteeredBroadcast));
    }

    let io = &s.io;
    for (i, side) in ["inside", "outside"].into_iter().enumerate() {
        counter!("natfw_afxdp_rx_frames_total", "side" => side).absolute(io.rx[i]);
        counter!("natfw_afxdp_tx_frames_total", "side" => side).absolute(io.tx[i]);
    }
    for (event, n) in [
        ("forwarded", io.forwarded),
        ("consumed", io.consumed),
        ("to_kernel_dropped", io.to_kernel_dropped),
        ("emitted", io.emitted),
        ("no_neighbour", io.no_neighbour),
        ("too_big", io.too_big),
        ("tx_ring_full", io.tx_ring_full),
        ("no_free_frame", io.no_free_frame),
        ("bad_desc", io.bad_desc),
    ] {
        counter!("natfw_afxdp_frames_total", "event" => event).absolute(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition as a Prometheus text parser reads it: every series has HELP and TYPE,
    /// counters end in `_total`, every name is one of [`SERIES`] and documented.
    #[test]
    fn exposition_parses_with_help_and_type_for_every_series() {
        let m = Metrics::new();
        let mut s = Snapshot::default();
        s.engine.fwd_out.add(100);
        s.engine.flows_active = 2;
        s.rules.insert("web".into(), RuleStat::default());
        s.xdp.push(("in0".into(), XdpCounters::default()));
        s.heartbeats = 7;
        s.workers.push(WorkerStat {
            frames: 3,
            flows: 1,
            heartbeats: 7,
            answers_lost: 0,
        });
        s.xsk.push(("inside", Default::default()));
        s.default_route.push(("ipv4", true));
        s.dns = crate::dns::DnsStats::default().rows();
        s.syslog = Some(SyslogStat::default());
        m.publish(&s);
        let text = m.render();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("parses");
        let doc = include_str!("../../../docs/OPERATIONS.md");
        let mut seen = std::collections::BTreeSet::new();
        for sample in &scrape.samples {
            let name = sample.metric.as_str();
            seen.insert(name.to_string());
            let (_, kind, help) = SERIES
                .iter()
                .find(|(n, _, _)| *n == name)
                .unwrap_or_else(|| panic!("{name} is not in SERIES"));
            assert_eq!(
                scrape.docs.get(name).map(String::as_str),
                Some(*help),
                "HELP of {name}"
            );
            let typed = format!(
                "# TYPE {name} {}",
                match kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                }
            );
            assert!(text.contains(&typed), "{typed}");
            match (kind, &sample.value) {
                (Kind::Counter, prometheus_parse::Value::Counter(_)) => {
                    assert!(name.ends_with("_total"), "{name}")
                }
                (Kind::Gauge, prometheus_parse::Value::Gauge(_)) => {
                    assert!(!name.ends_with("_total"), "{name}")
                }
                (k, v) => panic!("{name}: {k:?} rendered as {v:?}"),
            }
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} missing from docs/OPERATIONS.md"
            );
        }
        let all: std::collections::BTreeSet<String> =
            SERIES.iter().map(|(n, _, _)| n.to_string()).collect();
        assert_eq!(seen, all, "every listed series is exported");
        let info = scrape
            .samples
            .iter()
            .find(|s| s.metric == "natfw_build_info")
            .unwrap();
        assert_eq!(info.labels.get("version"), Some(VERSION));
        assert_eq!(info.labels.get("git"), Some(GIT));
        assert!(!GIT.is_empty());
        let hb = scrape
            .samples
            .iter()
            .find(|s| s.metric == "natfw_worker_heartbeats_total")
            .unwrap();
        assert_eq!(hb.value, prometheus_parse::Value::Counter(7.0));
    }

    #[test]
    fn publish_renders_counters_with_labels() {
        let m = Metrics::new();
        let mut s = Snapshot::default();
        s.engine.fwd_out.add(100);
        s.engine.flows_active = 3;
        s.rules.insert(
            "web".into(),
            RuleStat {
                hits: 2,
                bytes: 500,
                last_hit: None,
            },
        );
        m.publish(&s);
        let text = m.render();
        assert!(
            text.contains("natfw_bytes_total{direction=\"out\",action=\"forward\"} 100"),
            "{text}"
        );
        assert!(text.contains("natfw_flows_active 3"), "{text}");
        assert!(
            text.contains("natfw_rule_hits_total{rule=\"web\"} 2"),
            "{text}"
        );
        s.engine.fwd_out.add(50);
        m.publish(&s);
        assert!(m
            .render()
            .contains("natfw_bytes_total{direction=\"out\",action=\"forward\"} 150"));
    }
}
