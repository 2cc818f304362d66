//! The sans-I/O engine: connection tracking, SNAT, L7 identification, the verdict state machine
//! (docs/CONTRACT.md, "Verdict semantics") and flow-log records. The caller owns I/O and time: it hands
//! frames to [`Engine::process`], sends what [`Engine::drain_emits`] returns and calls
//! [`Engine::poll`] about every 100 ms.

mod decide;
mod end;
pub mod event;
mod flow;
mod fragment;
pub mod handover;
mod hold;
mod icmp;
mod ident;
mod inbound;
mod interim;
pub mod offload;
mod outbound;
mod upgrade;
pub mod worker;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

pub use self::event::{
    DnsVerified, DomainSrc, EndReason, FactState, FlowEnd, FlowInterim, FlowSink, FlowVerdict,
    NullSink,
};
use arc_swap::ArcSwap;
pub use natfw_policy::compile::CompiledPolicy;
use natfw_policy::eval::IpProto;
pub use natfw_policy::geo::GeoDb;
use natfw_policy::{Action, DecidedBy, DomainMode, FlowFacts, Outcome, Resolution};

use self::flow::{Decided, DnsWait, FlowData, IdentRef, Settled, WHY_ENDED_PENDING};
pub use self::handover::{AdoptPolicy, AdoptStats, HandoverFlow};
use self::ident::{Fed, Ident, IdentTable};
pub use self::offload::{OffloadCounts, OffloadFlow, OffloadTable, OFFLOAD_SYNC};
pub use self::worker::WorkerSlot;
use crate::conntrack::{
    Dir, Entry, FlowKey, FlowRef, ReplyKey, Table, TcpEvent, TcpState, Timeouts, TimerClass,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use crate::dnscache::{AnswerSource, DnsCache, GatewayFacts, NameState};
pub use crate::frag::FragConfig;
use crate::frag::{FragResult, FragStats, Reassembler};
use crate::reasm::StreamBuf;
use crate::snat::{Snat, SourceClass};
use crate::stats::EngineStats;
use crate::time::Timestamp;
use crate::wire::build::{tcp_rst, RstTo};
use crate::wire::rewrite::{self, ChecksumMode, End};
use crate::wire::tcp::SeqNumber;
use crate::wire::{self, IcmpKind, PacketInfo, WireError, L4};

/// The interface a frame arrived on or leaves by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Facing the private hosts.
    Inside,
    /// Facing the internet (the EIPs live here).
    Outside,
}

impl Side {
    /// The other interface.
    pub fn other(self) -> Side {
        match self {
            Side::Inside => Side::Outside,
            Side::Outside => Side::Inside,
        }
    }
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The frame could not be parsed.
    Malformed,
    /// IP fragment the reassembler refused (malformed, conflicting overlap, over a bound).
    Fragment,
    /// A reassembled datagram is larger than [`EngineOptions::max_frame_len`]; the engine does
    /// not re-fragment.
    ReassembledTooBig,
    /// The policy denied the flow.
    Policy,
    /// Return traffic for no known flow.
    NoFlow,
    /// No SNAT entry or no free port for the source.
    NoSnatPort,
    /// The flow table is full.
    TableFull,
    /// The hold buffer (per flow or global) is full.
    HoldFull,
    /// The segment does not fit the TCP state.
    InvalidState,
    /// Protocol or ICMP type the engine does not translate.
    Unsupported,
    /// Overlapping retransmission with different bytes (strict mode).
    Evasion,
    /// TTL / hop limit would reach zero.
    TtlExceeded,
    /// Another packet worker's (the steering program gave every worker a copy it could not
    /// place): not an error, counted apart ([`EngineStats::other_worker`]).
    OtherWorker,
}

impl DropReason {
    /// Short stable label (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::ReassembledTooBig => "reassembled_too_big",
            DropReason::Policy => "policy",
            DropReason::NoFlow => "no_flow",
            DropReason::NoSnatPort => "no_snat_port",
            DropReason::TableFull => "table_full",
            DropReason::HoldFull => "hold_full",
            DropReason::InvalidState => "invalid_state",
            DropReason::Unsupported => "unsupported",
            DropReason::Evasion => "evasion",
            DropReason::OtherWorker => "other_worker",
            DropReason::TtlExceeded => "ttl_exceeded",
        }
    }
}

/// What to do with a frame handed to [`Engine::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The frame was rewritten in place (SNAT outbound / reverse NAT inbound): send it out of the
    /// other side.
    Forward,
    /// Do not send it.
    Drop(DropReason),
    /// The engine kept a copy (payload held while the verdict is pending); do not send it.
    Held,
    /// Not ours (bypassed, not SNAT-bound, traffic to the gateway itself): give it to the kernel.
    ToKernel,
}

/// A frame the engine wants sent: released held payload, RSTs, ICMP errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    /// Interface to send it out of.
    pub side: Side,
    /// Complete ethernet frame.
    pub frame: Vec<u8>,
}

/// Engine construction failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The configuration cannot be run by the engine (e.g. an SNAT entry without EIPs).
    Config(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Config(m) => write!(f, "engine configuration: {m}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// Tunables of the engine that are not part of the YAML config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Maximum number of tracked flows.
    pub max_flows: usize,
    /// Idle timeout of established TCP flows, seconds.
    pub tcp_established_secs: u32,
    /// Per-flow limit of held payload and L7 reassembly bytes.
    pub per_flow_hold_bytes: usize,
    /// Limit of held payload bytes across all flows.
    pub global_hold_bytes: usize,
    /// How long a verdict may stay pending before the facts become unidentifiable, ms.
    pub pending_timeout_ms: u64,
    /// Always complete L4 checksums in full when rewriting (live AF_XDP with offloads).
    pub full_checksums: bool,
    /// Entries of the DNS name cache.
    pub dns_cache_entries: usize,
    /// Names the gateway's own resolution may hold (rule names and names resolved on demand).
    pub gateway_dns_names: usize,
    /// The caller resolves names on request ([`Engine::drain_resolve_requests`]): a flow whose
    /// `fqdn_and_dns` rule needs its name's addresses waits for them. Off: a name the engine
    /// has no address for does not resolve to the destination.
    pub on_demand_resolution: bool,
    /// How long a flow waits for an on-demand resolution before it counts as unknown, ms.
    pub resolve_timeout_ms: u64,
    /// Names being resolved on demand at once; a flow over the bound does not wait (unknown).
    pub max_resolving: usize,
    /// Bounds of IP fragment reassembly.
    pub frag: FragConfig,
    /// Largest frame (Ethernet header included) a reassembled datagram may be sent as; larger
    /// ones are dropped ([`DropReason::ReassembledTooBig`]), they are not re-fragmented.
    pub max_frame_len: usize,
    /// Interim records of live flows (`logging.interim_interval`), ms: a flow gets one record
    /// per interval while it lives ([`FlowSink::flow_interim`]). 0 = none (the default: `natfw
    /// run` sets it from the config; replay writes end records only).
    pub interim_interval_ms: u64,
    /// This engine's packet worker among several ([`worker`]): it allocates SNAT ports of its
    /// own residue and ignores packets of other workers' flows. Default: the only worker.
    pub worker: WorkerSlot,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_flows: 1_000_000,
            tcp_established_secs: 3600,
            per_flow_hold_bytes: 16 * 1024,
            global_hold_bytes: 64 * 1024 * 1024,
            pending_timeout_ms: 5_000,
            full_checksums: false,
            dns_cache_entries: 65_536,
            gateway_dns_names: 16_384,
            on_demand_resolution: false,
            resolve_timeout_ms: 2_000,
            max_resolving: 256,
            frag: FragConfig::default(),
            // Ethernet header + a 1500-byte IP MTU.
            max_frame_len: 1514,
            interim_interval_ms: 0,
            worker: WorkerSlot::default(),
        }
    }
}

/// The engine. Single-threaded; run one per data-path thread.
pub struct Engine {
    policy: Arc<ArcSwap<CompiledPolicy>>,
    geo: Arc<GeoDb>,
    sink: Box<dyn FlowSink>,
    snat: Snat,
    table: Table<FlowData>,
    idents: IdentTable,
    /// (deadline, flow) of identifications in progress, in deadline order (constant timeout).
    deadlines: VecDeque<(Timestamp, FlowRef)>,
    dns: DnsCache,
    /// The gateway's own resolution results.
    gw_dns: GatewayFacts,
    /// Names being resolved on demand, with the flows waiting for them.
    resolving: HashMap<Arc<str>, Resolving>,
    /// (deadline, name) of on-demand resolutions, in deadline order (constant timeout).
    resolve_deadlines: VecDeque<(Timestamp, Arc<str>)>,
    /// Names to resolve, for the caller ([`Engine::drain_resolve_requests`]).
    resolve_requests: Vec<Arc<str>>,
    frags: Reassembler,
    opts: EngineOptions,
    ck: ChecksumMode,
    stats: EngineStats,
    emits: Vec<Emit>,
    /// Set by `new_flow` when an inside TCP segment of no flow cannot open one: `process`
    /// answers it with a RST to the client.
    reset_unknown: bool,
    /// STARTTLS / h2c / DNS-over-TCP side tables.
    watch: upgrade::Watches,
    /// Interim records of long flows.
    interim: interim::Interim,
    /// The in-kernel fast path, when the caller gave one ([`Engine::set_offload`]).
    offload: offload::OffloadState,
    /// DNS facts for the other packet workers ([`Engine::drain_shared_answers`]).
    shared_answers: Vec<worker::SharedAnswer>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("flows", &self.table.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// An on-demand resolution in progress.
#[derive(Debug)]
struct Resolving {
    asked: Timestamp,
    waiters: Vec<FlowRef>,
}

/// What the gateway's resolution of a name gave ([`Engine::resolution`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveOutcome {
    /// The name resolves to these addresses (A and AAAA, CNAMEs followed; empty for NXDOMAIN
    /// or no records), valid for `valid_secs`.
    Addresses { addrs: Vec<IpAddr>, valid_secs: u32 },
    /// No answer could be had (timeout, server failure); remembered for `retry_secs`.
    Failed { retry_secs: u32 },
}

/// A packet's place in its flow, from one parse.
#[derive(Debug, Clone, Copy)]
struct Seg {
    seq: SeqNumber,
    flags: u8,
    payload_off: usize,
    payload_len: usize,
}

impl Seg {
    fn of(info: &PacketInfo) -> Seg {
        let (seq, flags) = match info.l4 {
            L4::Tcp { seq, flags, .. } => (seq, flags.0),
            _ => (0, 0),
        };
        Seg {
            seq: SeqNumber(seq),
            flags,
            payload_off: info.payload_offset,
            payload_len: info.payload_len,
        }
    }

    fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame
            .get(self.payload_off..self.payload_off + self.payload_len)
            .unwrap_or(&[])
    }
}

fn ip_proto(p: u8) -> IpProto {
    match p {
        PROTO_TCP => IpProto::Tcp,
        PROTO_UDP => IpProto::Udp,
        PROTO_ICMP | PROTO_ICMPV6 => IpProto::Icmp,
        o => IpProto::Other(o),
    }
}

/// Add a finished flow's bytes to the rule that decided it (hits were credited at the decision).
fn credit_bytes(d: &FlowData) {
    if let Some((p, rule)) = d
        .decided()
        .and_then(|x| x.decided_under.as_ref().map(|p| (p, x.rule)))
    {
        p.counters()
            .get(rule)
            .add_bytes(d.out.bytes.saturating_add(d.inb.bytes));
    }
}

/// A TCP segment without SYN, FIN or RST, or a UDP datagram: what the established-flow paths
/// take (`Some`); anything else goes the general way.
#[inline]
fn plain_segment(info: &PacketInfo) -> Option<()> {
    use crate::conntrack::tcp_flags::{FIN, RST, SYN};
    match info.l4 {
        L4::Tcp { flags, .. } if flags.0 & (SYN | FIN | RST) == 0 => Some(()),
        L4::Udp { .. } => Some(()),
        _ => None,
    }
}

fn is_icmp(p: u8) -> bool {
    p == PROTO_ICMP || p == PROTO_ICMPV6
}

impl Engine {
    /// Build an engine for `cfg` with default [`EngineOptions`].
    pub fn new(
        cfg: &natfw_policy::Config,
        geo: Arc<GeoDb>,
        sink: Box<dyn FlowSink>,
    ) -> Result<Engine, EngineError> {
        Engine::with_options(cfg, geo, sink, EngineOptions::default())
    }

    /// Build an engine for `cfg` with explicit tunables.
    pub fn with_options(
        cfg: &natfw_policy::Config,
        geo: Arc<GeoDb>,
        sink: Box<dyn FlowSink>,
        opts: EngineOptions,
    ) -> Result<Engine, EngineError> {
        let mut snat = Snat::new(&cfg.gateway).map_err(EngineError::Config)?;
        snat.set_worker(opts.worker);
        if cfg.firewall.enabled && !cfg.gateway.dnat.is_empty() {
            return Err(EngineError::Config(
                "DNAT entries are not allowed while the firewall is enabled".into(),
            ));
        }
        let interim = interim::Interim::new(opts.interim_interval_ms);
        Ok(Engine {
            policy: Arc::new(ArcSwap::from_pointee(CompiledPolicy::new(&cfg.firewall))),
            geo,
            sink,

            snat,
            table: Table::new(
                opts.max_flows,
                Timeouts::with_established_secs(opts.tcp_established_secs),
            ),
            idents: IdentTable::default(),
            deadlines: VecDeque::new(),
            dns: DnsCache::new(opts.dns_cache_entries),
            gw_dns: GatewayFacts::new(opts.gateway_dns_names),
            resolving: HashMap::new(),
            resolve_deadlines: VecDeque::new(),
            resolve_requests: Vec::new(),
            frags: Reassembler::new(opts.frag),
            ck: if opts.full_checksums {
                ChecksumMode::Full
            } else {
                ChecksumMode::Incremental
            },
            opts,
            stats: EngineStats::default(),
            emits: Vec::new(),
            reset_unknown: false,
            watch: upgrade::Watches::default(),
            interim,
            offload: offload::OffloadState::default(),
            shared_answers: Vec::new(),
        })
    }

    /// Decide one frame that arrived on `side`; may rewrite it in place.
    pub fn process(&mut self, now: Timestamp, side: Side, frame: &mut [u8]) -> Verdict {
        let len = frame.len();
        match side {
            Side::Inside => self.stats.rx_inside.add(len),
            Side::Outside => self.stats.rx_outside.add(len),
        }
        // Matched by reference: moving the summary out of the result would copy it.
        let parsed = wire::parse(frame);
        let v = match &parsed {
            Err(WireError::NotIp) => Verdict::ToKernel,
            Err(_) => Verdict::Drop(DropReason::Malformed),
            Ok(info) => match side {
                Side::Inside => {
                    let v = self.outbound(now, frame, info);
                    if std::mem::take(&mut self.reset_unknown) {
                        self.reset_unknown_client(frame, info);
                    }
                    v
                }
                Side::Outside => self.inbound(now, frame, info),
            },
        };
        self.offload_after(now);
        let s = &mut self.stats;
        match v {
            Verdict::Forward if side == Side::Inside => s.fwd_out.add(len),
            Verdict::Forward => s.fwd_in.add(len),
            Verdict::ToKernel => s.to_kernel.add(len),
            Verdict::Held => s.held.add(len),
            Verdict::Drop(r) => match r {
                DropReason::Malformed => s.drop_parse.add(len),
                DropReason::Fragment | DropReason::ReassembledTooBig => s.drop_fragment.add(len),
                DropReason::Policy => s.drop_policy.add(len),
                DropReason::NoFlow => s.drop_no_flow.add(len),
                DropReason::NoSnatPort => s.drop_no_port.add(len),
                DropReason::TableFull => s.drop_table_full.add(len),
                DropReason::HoldFull => s.drop_hold_full.add(len),
                DropReason::InvalidState => s.drop_invalid_state.add(len),
                DropReason::Unsupported | DropReason::TtlExceeded => s.drop_unsupported.add(len),
                DropReason::Evasion => s.drop_evasion.add(len),
                DropReason::OtherWorker => s.other_worker.add(len),
            },
        }
        s.held_bytes = self.idents.bytes as u64;
        v
    }

    /// A mid-stream TCP segment from the inside that belongs to no flow (a connection of an
    /// earlier natfw process, one that timed out): RST it back to the client, which would
    /// otherwise wait on a connection nothing forwards. Never answers a RST (the builder
    /// checks).
    fn reset_unknown_client(&mut self, frame: &[u8], info: &PacketInfo) {
        if let Some(rst) = tcp_rst(frame, info, RstTo::Sender) {
            self.stats.resets_no_flow += 1;
            self.emits.push(Emit {
                side: Side::Inside,
                frame: rst,
            });
        }
    }

    /// Move the frames the engine wants sent into `out`.
    pub fn drain_emits(&mut self, out: &mut Vec<Emit>) {
        self.stats.emitted.packets += self.emits.len() as u64;
        self.stats.emitted.bytes += self.emits.iter().map(|e| e.frame.len() as u64).sum::<u64>();
        out.append(&mut self.emits);
    }

    /// Expire timers (idle flows, pending verdicts). Call about every 100 ms.
    pub fn poll(&mut self, now: Timestamp) {
        self.frags.expire(now);
        while let Some(&(deadline, r)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            self.identification_timeout(now, r);
        }
        self.offload_poll(now);
        let timeout = std::time::Duration::from_millis(self.opts.resolve_timeout_ms);
        while let Some((deadline, _)) = self.resolve_deadlines.front() {
            if *deadline > now {
                break;
            }
            let Some((_, name)) = self.resolve_deadlines.pop_front() else {
                break;
            };
            if self
                .resolving
                .get(&name)
                .is_some_and(|w| w.asked.add(timeout) <= now)
            {
                self.stats.dns_resolve_timeouts += 1;
                self.resolution_done(now, &name, true);
            }
        }
        while let Some((r, e)) = self.table.pop_expired(now) {
            let reason = match e.data.tcp.state {
                _ if e.key.proto != PROTO_TCP => EndReason::Timeout,
                TcpState::Closed | TcpState::Closing | TcpState::FinWait => EndReason::Fin,
                _ => EndReason::Timeout,
            };
            self.finish(now, r, e, reason);
        }
        self.interim_tick(now);
        self.stats.held_bytes = self.idents.bytes as u64;
    }

    /// End every flow (end reason `shutdown`), emitting their records.
    pub fn shutdown(&mut self, now: Timestamp) {
        while let Some((r, e)) = self.table.pop_any() {
            self.finish(now, r, e, EndReason::Shutdown);
        }
        self.deadlines.clear();
        self.stats.held_bytes = self.idents.bytes as u64;
    }

    /// Turn the on-demand resolution of names ([`EngineOptions::on_demand_resolution`]) on or
    /// off (off: when the caller has no resolver to answer requests).
    pub fn set_on_demand_resolution(&mut self, on: bool) {
        self.opts.on_demand_resolution = on;
    }

    /// The counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Fragment reassembly counters.
    pub fn frag_stats(&self) -> &FragStats {
        self.frags.stats()
    }

    /// Number of flows tracked right now.
    pub fn flow_count(&self) -> usize {
        self.table.len()
    }

    /// The live policy: store a new `CompiledPolicy` to hot-reload; flows already decided keep
    /// their verdict, pending ones are evaluated against the new policy.
    pub fn policy_handle(&self) -> Arc<ArcSwap<CompiledPolicy>> {
        Arc::clone(&self.policy)
    }

    /// Add (`on`) or remove a bypassed source prefix (`natfw bypass add|remove`), as the XDP
    /// program and nftables do: new flows of a source no longer bypassed are SNATed and
    /// inspected here instead of being answered [`Verdict::ToKernel`].
    pub fn set_bypass(&mut self, net: ipnet::IpNet, on: bool) {
        self.offload_flush();
        self.snat.set_bypass(net, on);
    }

    /// The bypassed source prefixes the engine applies.
    pub fn bypass(&self) -> &[ipnet::IpNet] {
        self.snat.bypass()
    }

    /// The gateway's own resolution of `name` (a rule name it keeps resolved, or a name asked
    /// for by [`Engine::drain_resolve_requests`]): a gateway-scoped fact, valid for every client,
    /// that replaces what was known of the name. Flows waiting for it are decided.
    pub fn resolution(&mut self, now: Timestamp, name: &str, outcome: ResolveOutcome) {
        let secs = |s: u32| std::time::Duration::from_secs(u64::from(s));
        let stored = match &outcome {
            ResolveOutcome::Addresses { addrs, valid_secs } => {
                self.gw_dns.set(now, name, addrs, secs(*valid_secs))
            }
            ResolveOutcome::Failed { retry_secs } => {
                self.gw_dns.set_failed(now, name, secs(*retry_secs))
            }
        };
        if !stored {
            self.stats.dns_gateway_names_full += 1;
        }
        self.stats.dns_gateway_names = self.gw_dns.len() as u64;
        let failed = !stored || matches!(outcome, ResolveOutcome::Failed { .. });
        self.resolution_done(now, name, failed);
    }

    /// Forget the gateway's resolution of `name` (no rule uses it any more).
    pub fn forget_resolution(&mut self, name: &str) {
        self.gw_dns.forget(name);
        self.stats.dns_gateway_names = self.gw_dns.len() as u64;
    }

    /// Teach the engine that `name` resolves to `ips` for every client (the gateway's own
    /// resolution), valid for `ttl` seconds.
    pub fn learn_resolution(&mut self, now: Timestamp, name: &str, ips: &[IpAddr], ttl: u32) {
        self.resolution(
            now,
            name,
            ResolveOutcome::Addresses {
                addrs: ips.to_vec(),
                valid_secs: ttl,
            },
        );
    }

    /// An answer the gateway's DNS forwarder relayed to `client`: `name` resolves to each
    /// (address, TTL). A client-scoped fact, like an answer crossing the gateway.
    pub fn learn_forwarded_answer(
        &mut self,
        now: Timestamp,
        client: IpAddr,
        name: &str,
        answers: &[(IpAddr, u32)],
    ) {
        for &(ip, ttl) in answers {
            self.dns
                .learn_from(now, Some(client), name, ip, ttl, AnswerSource::Forwarder);
            self.stats.dns_answers_forwarded += 1;
        }
    }

    /// Move the DNS facts this engine learned since the last call into `out`, for the other
    /// packet workers (only with [`EngineOptions::worker`] of more than one worker).
    pub fn drain_shared_answers(&mut self, out: &mut Vec<worker::SharedAnswer>) {
        out.append(&mut self.shared_answers);
    }

    /// A DNS fact another packet worker learned ([`Engine::drain_shared_answers`]): the client's
    /// flows this engine sees match it as if the answer had crossed here.
    pub fn learn_shared_answer(&mut self, now: Timestamp, a: &worker::SharedAnswer) {
        self.dns
            .learn_name(now, Some(a.client), &a.name, a.addr, a.ttl, a.asked);
        self.stats.dns_answers_shared += 1;
    }

    /// Use `policy` (another engine's [`Engine::policy_handle`]) instead of this engine's own:
    /// the gateway's packet workers share one compiled policy, swapped once for all on reload.
    pub fn share_policy(&mut self, policy: Arc<ArcSwap<CompiledPolicy>>) {
        self.policy = policy;
    }

    /// This engine's packet worker ([`EngineOptions::worker`]).
    pub fn worker(&self) -> WorkerSlot {
        self.opts.worker
    }

    /// Move the names the engine wants resolved into `out`; answer each with
    /// [`Engine::resolution`]. Unanswered names time out after
    /// [`EngineOptions::resolve_timeout_ms`].
    pub fn drain_resolve_requests(&mut self, out: &mut Vec<Arc<str>>) {
        out.append(&mut self.resolve_requests);
    }

    /// Replay: a frame captured on the inside going TO a private host (a server reply) is
    /// rewritten to how it arrives at the outside (dst = the EIP/port/ICMP id the engine chose).
    /// Returns `false` when no flow matches it.
    pub fn to_outside_view(&self, frame: &mut [u8]) -> bool {
        let Ok(info) = wire::parse(frame) else {
            return false;
        };
        let (key, icmp_error) = match info.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (
                FlowKey {
                    src: info.dst,
                    dst: info.src,
                    sport: dport,
                    dport: sport,
                    proto: info.proto,
                },
                false,
            ),
            L4::Icmp {
                kind: IcmpKind::EchoReply { id, .. },
                ..
            } => (
                FlowKey {
                    src: info.dst,
                    dst: info.src,
                    sport: id,
                    dport: id,
                    proto: info.proto,
                },
                false,
            ),
            L4::Icmp {
                kind: IcmpKind::Error { inner, .. },
                ..
            } if inner.has_ports => (
                FlowKey {
                    src: inner.src,
                    dst: inner.dst,
                    sport: inner.sport,
                    dport: inner.dport,
                    proto: inner.proto,
                },
                true,
            ),
            _ => return false,
        };
        let Some((eip, eport)) = self
            .table
            .lookup(&key)
            .and_then(|r| self.table.get(r))
            .and_then(|e| e.snat)
        else {
            return false;
        };
        if icmp_error {
            rewrite::rewrite_icmp_error_inner(frame, &info, End::Src, eip, eport, self.ck).is_ok()
        } else {
            rewrite::set_dst(frame, &info, eip, Some(eport), self.ck).is_ok()
        }
    }
}
