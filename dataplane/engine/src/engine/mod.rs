//! The sans-I/O engine: connection tracking, SNAT, L7 identification, the verdict state machine
//! (SPEC.md "Verdict semantics") and flow-log records. The caller owns I/O and time: it hands
//! frames to [`Engine::process`], sends what [`Engine::drain_emits`] returns and calls
//! [`Engine::poll`] about every 100 ms.

pub mod event;
mod flow;
mod ident;

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

pub use self::event::{DomainSrc, EndReason, FactState, FlowEnd, FlowSink, FlowVerdict, NullSink};
use arc_swap::ArcSwap;
pub use natfw_policy::compile::CompiledPolicy;
use natfw_policy::eval::IpProto;
pub use natfw_policy::geo::GeoDb;
use natfw_policy::{Action, DecidedBy, FlowFacts, Outcome};

use self::flow::{FlowData, NO_IDENT, WHY_ENDED_PENDING};
use self::ident::{Fed, Ident, IdentTable};
use crate::conntrack::{
    Dir, Entry, FlowKey, FlowRef, ReplyKey, Table, TcpEvent, TcpState, Timeouts, TimerClass,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use crate::dnscache::DnsCache;
pub use crate::frag::FragConfig;
use crate::frag::{FragResult, FragStats, Reassembler};
use crate::reasm::StreamBuf;
use crate::snat::{Snat, SourceClass};
use crate::stats::EngineStats;
use crate::time::Timestamp;
use crate::wire::build::{tcp_rst, RstTo};
use crate::wire::rewrite::{self, ChecksumMode, End};
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
    /// Bounds of IP fragment reassembly.
    pub frag: FragConfig,
    /// Largest frame (Ethernet header included) a reassembled datagram may be sent as; larger
    /// ones are dropped ([`DropReason::ReassembledTooBig`]), they are not re-fragmented.
    pub max_frame_len: usize,
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
            frag: FragConfig::default(),
            // Ethernet header + a 1500-byte IP MTU.
            max_frame_len: 1514,
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
    frags: Reassembler,
    opts: EngineOptions,
    ck: ChecksumMode,
    stats: EngineStats,
    emits: Vec<Emit>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("flows", &self.table.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A packet's place in its flow, from one parse.
#[derive(Debug, Clone, Copy)]
struct Seg {
    seq: u32,
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
            seq,
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
    if let Some(p) = &d.decided_under {
        p.counters()
            .get(d.rule)
            .add_bytes(d.out.bytes.saturating_add(d.inb.bytes));
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
        let snat = Snat::new(&cfg.gateway).map_err(EngineError::Config)?;
        if cfg.firewall.enabled && !cfg.gateway.dnat.is_empty() {
            return Err(EngineError::Config(
                "DNAT entries are not allowed while the firewall is enabled".into(),
            ));
        }
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
            frags: Reassembler::new(opts.frag),
            ck: if opts.full_checksums {
                ChecksumMode::Full
            } else {
                ChecksumMode::Incremental
            },
            opts,
            stats: EngineStats::default(),
            emits: Vec::new(),
        })
    }

    /// Decide one frame that arrived on `side`; may rewrite it in place.
    pub fn process(&mut self, now: Timestamp, side: Side, frame: &mut [u8]) -> Verdict {
        let len = frame.len();
        match side {
            Side::Inside => self.stats.rx_inside.add(len),
            Side::Outside => self.stats.rx_outside.add(len),
        }
        let v = match wire::parse(frame) {
            Err(WireError::NotIp) => Verdict::ToKernel,
            Err(_) => Verdict::Drop(DropReason::Malformed),
            Ok(info) => match side {
                Side::Inside => self.outbound(now, frame, &info),
                Side::Outside => self.inbound(now, frame, &info),
            },
        };
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
            },
        }
        s.held_bytes = self.idents.bytes as u64;
        v
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
        while let Some((r, e)) = self.table.pop_expired(now) {
            let reason = match e.data.tcp.state {
                _ if e.key.proto != PROTO_TCP => EndReason::Timeout,
                TcpState::Closed | TcpState::Closing | TcpState::FinWait => EndReason::Fin,
                _ => EndReason::Timeout,
            };
            self.finish(now, r, e, reason);
        }
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

    /// Teach the engine that `name` resolves to `ips` (the gateway's own resolution of the
    /// rule domains in `dns` modes, see `CompiledPolicy::dns_mode_domains`).
    pub fn learn_resolution(&mut self, now: Timestamp, name: &str, ips: &[IpAddr], ttl: u32) {
        for &ip in ips {
            self.dns.learn(now, None, name, ip, ttl);
        }
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

    // ---------------------------------------------------------------- outbound

    fn outbound(&mut self, now: Timestamp, frame: &mut [u8], info: &PacketInfo) -> Verdict {
        let entry = match self.snat.classify(info.src) {
            SourceClass::NotOurs => return Verdict::ToKernel,
            SourceClass::Bypass => {
                self.stats.bypassed.add(frame.len());
                return Verdict::ToKernel;
            }
            SourceClass::Entry(e) => e,
        };
        if info.fragment.is_some() {
            return self.fragment(now, Side::Inside, frame);
        }
        let key = match info.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => FlowKey {
                src: info.src,
                dst: info.dst,
                sport,
                dport,
                proto: info.proto,
            },
            L4::Icmp {
                kind: IcmpKind::EchoRequest { id, .. },
                ..
            } => FlowKey {
                src: info.src,
                dst: info.dst,
                sport: id,
                dport: id,
                proto: info.proto,
            },
            L4::Icmp {
                kind: IcmpKind::Error { inner, .. },
                ..
            } => return self.outbound_icmp_error(now, inner, frame, info),
            _ => return Verdict::Drop(DropReason::Unsupported),
        };
        let r = match self.table.lookup(&key) {
            Some(r) => r,
            None => match self.new_flow(now, entry, key, info) {
                Ok(r) => r,
                Err(v) => return v,
            },
        };
        self.outbound_flow(now, r, frame, info)
    }

    fn new_flow(
        &mut self,
        now: Timestamp,
        entry: usize,
        key: FlowKey,
        info: &PacketInfo,
    ) -> Result<FlowRef, Verdict> {
        let mut isn = 0;
        if let L4::Tcp { flags, seq, .. } = info.l4 {
            // Only a SYN opens a TCP flow: no mid-stream pickup past the firewall.
            if !flags.syn() || flags.ack() || flags.rst() {
                return Err(Verdict::Drop(DropReason::InvalidState));
            }
            isn = seq;
        }
        let Some(eip) = self.snat.pick_eip(entry, key.src) else {
            return Err(Verdict::Drop(DropReason::NoSnatPort));
        };
        if self.table.len() >= self.table.capacity() {
            let Some(victim) = self.table.eviction_candidate() else {
                self.stats.table_full += 1;
                return Err(Verdict::Drop(DropReason::TableFull));
            };
            if let Some(e) = self.table.remove(victim) {
                self.stats.evictions += 1;
                self.finish(now, victim, e, EndReason::Evicted);
            }
        }
        let mut data = FlowData::new(now, key.proto, self.geo.lookup(key.dst));
        data.isn_c = isn;
        data.fw_off = !self.policy.load().enabled();
        // The name this client just resolved to this address, for the log.
        if let Some(n) = self.dns.name_for_client(now, key.src, key.dst) {
            data.domain = Some(n.into());
            data.domain_src = DomainSrc::Dns;
        }
        let class = match key.proto {
            PROTO_TCP => TimerClass::Embryonic,
            PROTO_UDP => TimerClass::Udp,
            _ => TimerClass::Icmp,
        };
        let r = match self.table.insert(key, class, now, data) {
            Ok(r) => r,
            Err(_) => return Err(Verdict::Drop(DropReason::TableFull)),
        };
        let Some(port) = self.snat.allocate(&self.table, &key, eip) else {
            self.table.remove(r);
            return Err(Verdict::Drop(DropReason::NoSnatPort));
        };
        if self.table.set_snat(r, eip, port).is_err() {
            self.table.remove(r);
            return Err(Verdict::Drop(DropReason::NoSnatPort));
        }
        self.stats.flows_created += 1;
        self.stats.flows_active = self.table.len() as u64;
        // TCP and ICMP can be judged on L3/L4 facts right away; UDP after its first datagram.
        if key.proto != PROTO_UDP {
            self.evaluate(now, r);
        }
        Ok(r)
    }

    fn outbound_flow(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        frame: &mut [u8],
        info: &PacketInfo,
    ) -> Verdict {
        let seg = Seg::of(info);
        let len = frame.len();
        let Some(e) = self.table.get_mut(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let Some((eip, eport)) = e.snat else {
            return Verdict::Drop(DropReason::NoSnatPort);
        };
        let proto = e.key.proto;
        let d = &mut e.data;
        if d.recorded {
            // Tombstone: a denied flow stays denied; a closed one lets stragglers through.
            return if d.verdict == FlowVerdict::Drop {
                Verdict::Drop(DropReason::Policy)
            } else {
                self.translate_out(frame, info, eip, eport)
            };
        }
        let mut reset = false;
        let mut closed = false;
        if proto == PROTO_TCP {
            match d.tcp.on_segment(Dir::Out, seg.flags, seg.payload_len > 0) {
                TcpEvent::Invalid => return Verdict::Drop(DropReason::InvalidState),
                TcpEvent::Reset => reset = true,
                TcpEvent::Ok => closed = d.tcp.state == TcpState::Closed,
            }
            d.established |= d.tcp.state != TcpState::SynSent && d.tcp.state != TcpState::SynRecv;
        }
        d.out.add(len);
        let class = Self::class_of(proto, d);
        self.table.touch(r, class, now);

        if reset {
            // The client gives up: nothing held may leave; the RST itself goes out.
            let v = self.translate_out(frame, info, eip, eport);
            self.end_flow(now, r, EndReason::Rst);
            return v;
        }

        // L7: feed payload while facts are pending (even when already accepted: the log wants
        // them) and decide.
        let payload_new = seg.payload_len > 0;
        let mut evasion = false;
        let mut duplicate = false;
        if payload_new {
            let d = &mut self.table.get_mut(r).expect("flow looked up above").data;
            d.client_payload = true;
            if d.facts_pending() {
                match proto {
                    PROTO_TCP => match self.feed_tcp_client(now, r, seg, frame) {
                        Fed::Conflict => evasion = true,
                        Fed::Duplicate => duplicate = true,
                        Fed::New | Fed::Full => {}
                    },
                    PROTO_UDP => self.feed_udp_client(now, r, seg, frame),
                    _ => {}
                }
            }
        }
        if evasion {
            self.stats.l7_conflicts += 1;
            let strict = self.policy.load().mode() == natfw_policy::Mode::Strict;
            let d = &mut self.table.get_mut(r).expect("flow looked up above").data;
            d.evasion = true;
            if strict && !d.fw_off {
                d.give_up("conflicting TCP retransmission");
                d.verdict = FlowVerdict::Drop;
                d.decided_by = None;
                self.deny(now, r, Some((frame, info)), false);
                return Verdict::Drop(DropReason::Evasion);
            }
        }
        let verdict_before = self.table.get(r).map(|e| e.data.verdict);
        if verdict_before == Some(FlowVerdict::Pending) {
            self.evaluate(now, r);
        }
        let Some(e) = self.table.get(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let d = &e.data;
        let v = match d.verdict {
            FlowVerdict::Drop => {
                self.deny(now, r, Some((frame, info)), false);
                Verdict::Drop(DropReason::Policy)
            }
            FlowVerdict::Accept => {
                let had_held = d.ident != NO_IDENT
                    && self
                        .idents
                        .get(d.ident)
                        .is_some_and(|id| !id.held.is_empty());
                if had_held {
                    // This frame joins the held ones, all released in stream order.
                    let v = self.translate_out(frame, info, eip, eport);
                    if v == Verdict::Forward && !duplicate {
                        self.push_held(r, seg, frame);
                    }
                    self.release(r);
                    if v == Verdict::Forward {
                        Verdict::Held
                    } else {
                        v
                    }
                } else {
                    self.translate_out(frame, info, eip, eport)
                }
            }
            FlowVerdict::Pending => {
                let has_held = d.ident != NO_IDENT
                    && self
                        .idents
                        .get(d.ident)
                        .is_some_and(|id| !id.held.is_empty());
                let fin = seg.flags & crate::conntrack::tcp_flags::FIN != 0;
                if payload_new || (fin && has_held) || proto == PROTO_UDP {
                    if duplicate {
                        // Already held once: exactly-once release.
                        return Verdict::Held;
                    }
                    match self.translate_out(frame, info, eip, eport) {
                        Verdict::Forward => self.hold(now, r, seg, frame, info),
                        other => other,
                    }
                } else {
                    // Handshake and bare ACKs pass while the verdict is pending.
                    self.translate_out(frame, info, eip, eport)
                }
            }
        };
        if matches!(v, Verdict::Forward | Verdict::Held) {
            if let Some(e) = self.table.get_mut(r) {
                e.data.sent = true;
            }
        }
        if closed {
            self.close_fin(now, r);
        }
        v
    }

    /// Feed a client TCP segment to the flow's stream; analyse.
    fn feed_tcp_client(&mut self, now: Timestamp, r: FlowRef, seg: Seg, frame: &[u8]) -> Fed {
        let idx = self.ensure_ident(now, r);
        let Some(e) = self.table.get_mut(r) else {
            return Fed::New;
        };
        let Some(id) = self.idents.get_mut(idx) else {
            return Fed::New;
        };
        let fed = ident::feed_client(id, seg.seq, seg.payload(frame));
        ident::analyse_tcp(&mut e.data, id, e.key.dport);
        if fed == Fed::Full && e.data.facts_pending() {
            e.data.give_up("reassembly buffer limit reached");
        }
        self.idents.recount(idx);
        self.after_analysis(r);
        fed
    }

    fn feed_udp_client(&mut self, now: Timestamp, r: FlowRef, seg: Seg, frame: &[u8]) {
        let idx = self.ensure_ident(now, r);
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        let Some(id) = self.idents.get_mut(idx) else {
            return;
        };
        let qname = ident::analyse_udp(&mut e.data, &mut id.quic, e.key.dport, seg.payload(frame));
        if let Some(q) = qname {
            // A DNS query flow carries the name it asked for.
            e.data.domain = Some(q.into());
            e.data.domain_src = DomainSrc::Dns;
        }
        let class = Self::class_of(e.key.proto, &e.data);
        self.table.touch(r, class, now);
        self.idents.recount(idx);
        self.after_analysis(r);
    }

    /// Count identification outcomes; free the side-table entry once nothing is pending and
    /// nothing is held.
    fn after_analysis(&mut self, r: FlowRef) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        let d = &mut e.data;
        if d.facts_pending() || d.ident == NO_IDENT {
            return;
        }
        match d.domain_fact {
            FactState::Known => self.stats.l7_domain_found += 1,
            _ => self.stats.l7_unidentifiable += 1,
        }
        if d.app_fact == FactState::Known {
            self.stats.l7_app_found += 1;
        }
        let idx = d.ident;
        let empty = self.idents.get(idx).is_none_or(|id| id.held.is_empty());
        if empty && d.verdict != FlowVerdict::Pending {
            d.ident = NO_IDENT;
            self.idents.remove(idx);
        }
    }

    fn ensure_ident(&mut self, now: Timestamp, r: FlowRef) -> u32 {
        let Some(e) = self.table.get_mut(r) else {
            return NO_IDENT;
        };
        if e.data.ident != NO_IDENT {
            return e.data.ident;
        }
        let stream = (e.key.proto == PROTO_TCP)
            .then(|| StreamBuf::new(e.data.isn_c, self.opts.per_flow_hold_bytes));
        let idx = self.idents.insert(Ident {
            flow: r,
            stream,
            server: Vec::new(),
            server_next: e.data.isn_s.wrapping_add(1),
            held: Vec::new(),
            bytes: 0,
            quic: None,
            started: now,
        });
        e.data.ident = idx;
        let deadline = now.add(std::time::Duration::from_millis(
            self.opts.pending_timeout_ms,
        ));
        self.deadlines.push_back((deadline, r));
        idx
    }

    /// Keep a copy of a (translated) frame while the verdict is pending.
    fn hold(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        seg: Seg,
        frame: &[u8],
        info: &PacketInfo,
    ) -> Verdict {
        let idx = self.ensure_ident(now, r);
        let Some(e) = self.table.get_mut(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let per_flow = self.idents.get(idx).map_or(0, |id| id.bytes);
        let over = per_flow + frame.len() > self.opts.per_flow_hold_bytes + 4096
            || self.idents.bytes + frame.len() > self.opts.global_hold_bytes;
        if over {
            // Cannot wait any longer: decide with what is known.
            e.data.give_up("hold buffer limit reached");
            self.evaluate(now, r);
            let verdict = self.table.get(r).map(|e| e.data.verdict);
            return match verdict {
                Some(FlowVerdict::Accept) => {
                    self.release(r);
                    self.emits.push(Emit {
                        side: Side::Outside,
                        frame: frame.to_vec(),
                    });
                    Verdict::Held
                }
                _ => {
                    self.deny(now, r, Some((frame, info)), true);
                    Verdict::Drop(DropReason::HoldFull)
                }
            };
        }
        self.push_held(r, seg, frame);
        Verdict::Held
    }

    /// Append a copy of `frame` to the flow's held frames.
    fn push_held(&mut self, r: FlowRef, seg: Seg, frame: &[u8]) {
        let Some(e) = self.table.get(r) else {
            return;
        };
        let idx = e.data.ident;
        let tcp = e.key.proto == PROTO_TCP;
        let rel = seg.seq.wrapping_sub(e.data.isn_c);
        if let Some(id) = self.idents.get_mut(idx) {
            let order = if tcp { rel } else { id.held.len() as u32 };
            id.held.push((order, frame.to_vec()));
        }
        self.idents.recount(idx);
    }

    /// Accepted: send every held frame, in stream order, exactly once.
    fn release(&mut self, r: FlowRef) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        let idx = e.data.ident;
        let pending = e.data.facts_pending();
        let Some(id) = self.idents.get_mut(idx) else {
            return;
        };
        let mut held = std::mem::take(&mut id.held);
        held.sort_by_key(|(order, _)| *order);
        for (_, f) in held {
            self.stats.released.add(f.len());
            self.emits.push(Emit {
                side: Side::Outside,
                frame: f,
            });
        }
        self.idents.recount(idx);
        if !pending {
            e.data.ident = NO_IDENT;
            self.idents.remove(idx);
        }
    }

    /// Denied: discard what is held, reset both ends (TCP), write the record, keep a tombstone.
    /// `current` is the frame being processed (`translated`: already SNAT-rewritten).
    fn deny(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        current: Option<(&[u8], &PacketInfo)>,
        translated: bool,
    ) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        if e.data.recorded {
            return;
        }
        e.data.verdict = FlowVerdict::Drop;
        let key = e.key;
        let idx = e.data.ident;
        e.data.ident = NO_IDENT;
        let held = self
            .idents
            .remove(idx)
            .map(|id| id.held)
            .unwrap_or_default();
        for (_, f) in &held {
            self.stats.discarded.add(f.len());
        }
        if key.proto == PROTO_TCP {
            // Template for the server-side RST: the held frame at the stream start (the
            // server's next expected sequence), else the current frame.
            let tmpl: Option<(Vec<u8>, bool)> = held
                .iter()
                .find(|(rel, _)| *rel == 1)
                .or_else(|| held.first())
                .map(|(_, f)| (f.clone(), true))
                .or_else(|| current.map(|(f, _)| (f.to_vec(), translated)));
            if let Some((f, is_translated)) = tmpl {
                self.emit_rsts(r, &f, is_translated);
            }
        }
        self.stats.flows_ended_denied += 1;
        self.write_record(now, r, EndReason::Denied);
        let class = TimerClass::Closed;
        self.table.touch(r, class, now);
    }

    /// RST to the client (inside) and, when the server saw the connection, to the server.
    /// `frame` is a segment of the flow as it left (`translated`) or as the client sent it.
    fn emit_rsts(&mut self, r: FlowRef, frame: &[u8], translated: bool) {
        let Some(e) = self.table.get(r) else {
            return;
        };
        let (key, snat) = (e.key, e.snat);
        // The server knows the connection once our SYN went out (anything past SYN_SENT here
        // means its SYN-ACK came back).
        let server_knows = e.data.tcp.state != TcpState::SynSent;
        let Ok(info) = wire::parse(frame) else {
            return;
        };
        let mut private = frame.to_vec();
        let mut public = frame.to_vec();
        let ok = if translated {
            rewrite::set_src(&mut private, &info, key.src, Some(key.sport), self.ck).is_ok()
        } else {
            snat.is_some_and(|(ip, port)| {
                rewrite::set_src(&mut public, &info, ip, Some(port), self.ck).is_ok()
            })
        };
        if !ok {
            return;
        }
        // The builder reads addresses from the parsed view: parse the rewritten copies.
        if server_knows {
            let rst = wire::parse(&public)
                .ok()
                .and_then(|pi| tcp_rst(&public, &pi, RstTo::Receiver { delivered: false }));
            if let Some(rst) = rst {
                self.emits.push(Emit {
                    side: Side::Outside,
                    frame: rst,
                });
            }
        }
        let rst = wire::parse(&private)
            .ok()
            .and_then(|pi| tcp_rst(&private, &pi, RstTo::Sender));
        if let Some(rst) = rst {
            self.emits.push(Emit {
                side: Side::Inside,
                frame: rst,
            });
        }
    }

    // ---------------------------------------------------------------- fragments

    /// A fragment of SNAT-bound (or return) traffic. It is stored; the fragment that completes
    /// its datagram gets [`Verdict::Held`] (the engine consumed it) and the whole datagram goes
    /// through the normal path: if that forwards it, the rewritten datagram is queued as an
    /// [`Emit`] out of the other side. Releasing through the emit queue keeps `process`'s
    /// in-place contract (the caller's frame buffer cannot grow to the datagram's size).
    fn fragment(&mut self, now: Timestamp, side: Side, frame: &[u8]) -> Verdict {
        let mut whole = match self.frags.push(now, frame) {
            FragResult::Held => return Verdict::Held,
            FragResult::Dropped(_) => return Verdict::Drop(DropReason::Fragment),
            FragResult::Complete(whole) => whole,
        };
        if whole.len() > self.opts.max_frame_len {
            return Verdict::Drop(DropReason::ReassembledTooBig);
        }
        let info = match wire::parse(&whole) {
            // The reassembler undid the fragmentation: anything else is a bad datagram (and
            // never recursion).
            Ok(info) if info.fragment.is_none() => info,
            _ => return Verdict::Drop(DropReason::Malformed),
        };
        let v = match side {
            Side::Inside => self.outbound(now, &mut whole, &info),
            Side::Outside => self.inbound(now, &mut whole, &info),
        };
        match v {
            Verdict::Forward => {
                self.emits.push(Emit {
                    side: side.other(),
                    frame: whole,
                });
                Verdict::Held
            }
            // The engine kept what it needs of the datagram (TCP hold) or nothing is sent.
            Verdict::Held | Verdict::Drop(_) => v,
            // Not possible past the SNAT / EIP checks; the kernel cannot use one fragment.
            Verdict::ToKernel => Verdict::Drop(DropReason::Unsupported),
        }
    }

    // ---------------------------------------------------------------- inbound

    fn inbound(&mut self, now: Timestamp, frame: &mut [u8], info: &PacketInfo) -> Verdict {
        if !self.snat.is_eip(info.dst) {
            return Verdict::ToKernel;
        }
        if info.fragment.is_some() {
            return self.fragment(now, Side::Outside, frame);
        }
        let rk = match info.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => ReplyKey {
                eip: info.dst,
                remote: info.src,
                eport: dport,
                rport: sport,
                proto: info.proto,
            },
            L4::Icmp {
                kind: IcmpKind::EchoReply { id, .. },
                ..
            } => ReplyKey {
                eip: info.dst,
                remote: info.src,
                eport: id,
                rport: 0,
                proto: info.proto,
            },
            L4::Icmp {
                kind: IcmpKind::Error { inner, .. },
                ..
            } => {
                if !inner.has_ports || inner.src != info.dst {
                    return Verdict::Drop(DropReason::Unsupported);
                }
                let rk = ReplyKey {
                    eip: inner.src,
                    remote: inner.dst,
                    eport: inner.sport,
                    rport: if is_icmp(inner.proto) { 0 } else { inner.dport },
                    proto: inner.proto,
                };
                return self.inbound_icmp_error(now, rk, frame, info);
            }
            // Pings and anything else addressed to the EIP are the gateway's own business.
            _ => return Verdict::ToKernel,
        };
        let Some(r) = self.table.lookup_reply(&rk) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let seg = Seg::of(info);
        let len = frame.len();
        let Some(e) = self.table.get_mut(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let key = e.key;
        let d = &mut e.data;
        if d.recorded {
            return if d.verdict == FlowVerdict::Drop {
                Verdict::Drop(DropReason::Policy)
            } else {
                self.translate_in(frame, info, &key)
            };
        }
        let mut reset = false;
        let mut closed = false;
        if key.proto == PROTO_TCP {
            let before = d.tcp.state;
            match d.tcp.on_segment(Dir::In, seg.flags, seg.payload_len > 0) {
                TcpEvent::Invalid => return Verdict::Drop(DropReason::InvalidState),
                TcpEvent::Reset => reset = true,
                TcpEvent::Ok => closed = d.tcp.state == TcpState::Closed,
            }
            if before == TcpState::SynSent && d.tcp.state == TcpState::SynRecv {
                d.isn_s = seg.seq;
            }
            d.established |= d.tcp.state != TcpState::SynSent && d.tcp.state != TcpState::SynRecv;
        }
        d.inb.add(len);
        let class = Self::class_of(key.proto, d);
        self.table.touch(r, class, now);
        if seg.payload_len > 0 {
            self.inbound_payload(now, r, &key, seg, frame);
        }
        if reset {
            let v = self.translate_in(frame, info, &key);
            self.end_flow(now, r, EndReason::Rst);
            return v;
        }
        // Server bytes may have settled a pending verdict (server-speaks-first protocols).
        if self.table.get(r).map(|e| e.data.verdict) == Some(FlowVerdict::Pending)
            && self.table.get(r).is_some_and(|e| !e.data.facts_pending())
        {
            self.evaluate(now, r);
            match self.table.get(r).map(|e| e.data.verdict) {
                Some(FlowVerdict::Accept) => self.release(r),
                Some(FlowVerdict::Drop) => {
                    self.deny(now, r, None, true);
                    return Verdict::Drop(DropReason::Policy);
                }
                _ => {}
            }
        }
        let v = self.translate_in(frame, info, &key);
        if closed {
            self.close_fin(now, r);
        }
        v
    }

    fn inbound_payload(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        key: &FlowKey,
        seg: Seg,
        frame: &[u8],
    ) {
        let payload = seg.payload(frame);
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        // DNS answers crossing the gateway teach the cache (scoped to the asking client).
        if key.proto == PROTO_UDP && e.data.app == Some(natfw_policy::App::Dns) {
            if let Ok(msg) = crate::l7::dns::parse(payload) {
                if msg.is_response {
                    for (name, ip, ttl) in msg.resolved() {
                        self.dns.learn(now, Some(key.src), &name, ip, ttl);
                        self.stats.dns_answers_learned += 1;
                    }
                }
            }
            return;
        }
        if key.proto != PROTO_TCP || e.data.app_fact != FactState::Pending {
            return;
        }
        let idx = self.ensure_ident(now, r);
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        if let Some(id) = self.idents.get_mut(idx) {
            ident::feed_server(id, seg.seq, payload);
            ident::analyse_tcp(&mut e.data, id, key.dport);
        }
        self.idents.recount(idx);
        self.after_analysis(r);
    }

    /// An ICMP error from a private host about a packet of one of its flows that came in (port
    /// unreachable, packet too big): the quoted packet and the outer source get the EIP side.
    fn outbound_icmp_error(
        &mut self,
        now: Timestamp,
        inner: wire::InnerTuple,
        frame: &mut [u8],
        info: &PacketInfo,
    ) -> Verdict {
        if !inner.has_ports || inner.dst != info.src {
            return Verdict::Drop(DropReason::Unsupported);
        }
        // The quoted packet went remote → private host: the flow's reverse direction.
        let key = FlowKey {
            src: inner.dst,
            dst: inner.src,
            sport: inner.dport,
            dport: inner.sport,
            proto: inner.proto,
        };
        let Some(r) = self.table.lookup(&key) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let len = frame.len();
        let Some(e) = self.table.get_mut(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let Some((eip, eport)) = e.snat else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        if e.data.verdict == FlowVerdict::Drop {
            return Verdict::Drop(DropReason::Policy);
        }
        if !e.data.recorded {
            e.data.out.add(len);
            let class = e.class;
            self.table.touch(r, class, now);
        }
        match rewrite::rewrite_icmp_error_inner(frame, info, End::Dst, eip, eport, self.ck) {
            Ok(()) if rewrite::decrement_ttl(frame, info) => Verdict::Forward,
            Ok(()) => Verdict::Drop(DropReason::TtlExceeded),
            Err(_) => Verdict::Drop(DropReason::Malformed),
        }
    }

    fn inbound_icmp_error(
        &mut self,
        now: Timestamp,
        rk: ReplyKey,
        frame: &mut [u8],
        info: &PacketInfo,
    ) -> Verdict {
        let Some(r) = self.table.lookup_reply(&rk) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let len = frame.len();
        let Some(e) = self.table.get_mut(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        if e.data.verdict == FlowVerdict::Drop {
            return Verdict::Drop(DropReason::Policy);
        }
        let key = e.key;
        if !e.data.recorded {
            e.data.inb.add(len);
            let class = e.class;
            self.table.touch(r, class, now);
        }
        match rewrite::rewrite_icmp_error_inner(frame, info, End::Src, key.src, key.sport, self.ck)
        {
            Ok(()) if rewrite::decrement_ttl(frame, info) => Verdict::Forward,
            Ok(()) => Verdict::Drop(DropReason::TtlExceeded),
            Err(_) => Verdict::Drop(DropReason::Malformed),
        }
    }

    // ---------------------------------------------------------------- shared

    fn translate_out(
        &self,
        frame: &mut [u8],
        info: &PacketInfo,
        eip: IpAddr,
        eport: u16,
    ) -> Verdict {
        match rewrite::set_src(frame, info, eip, Some(eport), self.ck) {
            Ok(()) if rewrite::decrement_ttl(frame, info) => Verdict::Forward,
            Ok(()) => Verdict::Drop(DropReason::TtlExceeded),
            Err(_) => Verdict::Drop(DropReason::Malformed),
        }
    }

    fn translate_in(&self, frame: &mut [u8], info: &PacketInfo, key: &FlowKey) -> Verdict {
        match rewrite::set_dst(frame, info, key.src, Some(key.sport), self.ck) {
            Ok(()) if rewrite::decrement_ttl(frame, info) => Verdict::Forward,
            Ok(()) => Verdict::Drop(DropReason::TtlExceeded),
            Err(_) => Verdict::Drop(DropReason::Malformed),
        }
    }

    fn class_of(proto: u8, d: &FlowData) -> TimerClass {
        match proto {
            PROTO_TCP => d.tcp.class(),
            PROTO_UDP if d.dns_only => TimerClass::DnsUdp,
            PROTO_UDP => TimerClass::Udp,
            _ => TimerClass::Icmp,
        }
    }

    /// Evaluate the policy for a flow whose verdict is pending; record the outcome.
    fn evaluate(&mut self, now: Timestamp, r: FlowRef) {
        let policy = self.policy.load();
        let Some(e) = self.table.get(r) else {
            return;
        };
        if e.data.verdict != FlowVerdict::Pending {
            return;
        }
        if !policy.enabled() {
            let d = &mut self.table.get_mut(r).expect("flow looked up above").data;
            d.fw_off = true;
            d.verdict = FlowVerdict::Accept;
            return;
        }
        let ev = {
            let names: Vec<&str> = self.dns.names_for(now, e.key.dst).collect();
            let facts = FlowFacts {
                src: e.key.src,
                dst: e.key.dst,
                proto: ip_proto(e.key.proto),
                dst_port: (!is_icmp(e.key.proto)).then_some(e.key.dport),
                country: e.data.country,
                domain: e.data.domain_for_policy(),
                app: e.data.app_for_policy(),
                dns_names: &names,
            };
            policy.evaluate(&facts)
        };
        self.stats.policy_evaluations += 1;
        if let Outcome::Decided { rule, action, by } = ev.outcome {
            let d = &mut self.table.get_mut(r).expect("flow looked up above").data;
            d.verdict = match action {
                Action::Accept => FlowVerdict::Accept,
                Action::Drop => FlowVerdict::Drop,
            };
            d.rule = rule;
            d.decided_by = Some(by);
            policy.counters().get(rule).hit(now.as_nanos());
            d.decided_under = Some(Arc::clone(&policy));
            if !ev.monitors.is_empty() {
                d.monitors = Some(ev.monitors.into_boxed_slice());
            }
            if by == DecidedBy::UnknownStrict {
                // Nothing more to learn from a flow that is being dropped.
                d.give_up("not identified");
            }
        }
    }

    /// The identification deadline of `r` passed: pending facts become unidentifiable.
    fn identification_timeout(&mut self, now: Timestamp, r: FlowRef) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        if e.data.ident == NO_IDENT || e.data.recorded || !e.data.facts_pending() {
            return;
        }
        let timeout = std::time::Duration::from_millis(self.opts.pending_timeout_ms);
        match self.idents.get(e.data.ident) {
            Some(id) if id.flow == r && id.started.add(timeout) <= now => {}
            _ => return,
        }
        e.data.give_up("identification timed out");
        self.stats.l7_timeouts += 1;
        let was_pending = e.data.verdict == FlowVerdict::Pending;
        self.evaluate(now, r);
        match self.table.get(r).map(|e| e.data.verdict) {
            Some(FlowVerdict::Accept) => self.release(r),
            Some(FlowVerdict::Drop) if was_pending => self.deny(now, r, None, true),
            _ => {}
        }
        self.after_analysis(r);
    }

    /// Both FINs acknowledged: write the record now, keep the entry briefly for stragglers.
    fn close_fin(&mut self, now: Timestamp, r: FlowRef) {
        if self.table.get(r).is_some_and(|e| !e.data.recorded) {
            self.stats.flows_ended_fin += 1;
            self.write_record(now, r, EndReason::Fin);
        }
    }

    /// End a flow now (RST): record and remove.
    fn end_flow(&mut self, now: Timestamp, r: FlowRef, reason: EndReason) {
        if let Some(e) = self.table.remove(r) {
            self.finish(now, r, e, reason);
        }
    }

    /// A flow left the table: write its record unless written, free its side state.
    fn finish(&mut self, now: Timestamp, _r: FlowRef, mut e: Entry<FlowData>, reason: EndReason) {
        if e.data.ident != NO_IDENT {
            if let Some(id) = self.idents.remove(e.data.ident) {
                for (_, f) in &id.held {
                    self.stats.discarded.add(f.len());
                }
            }
            e.data.ident = NO_IDENT;
            if e.data.facts_pending() && e.data.client_payload {
                e.data.give_up(WHY_ENDED_PENDING);
            }
        }
        self.stats.flows_active = self.table.len() as u64;
        if e.data.recorded {
            return;
        }
        if e.data.verdict == FlowVerdict::Pending && !e.data.fw_off {
            // Settle the verdict for the record with what is known now.
            let policy = self.policy.load();
            let names: Vec<&str> = self.dns.names_for(now, e.key.dst).collect();
            let mut d2 = FlowFacts {
                src: e.key.src,
                dst: e.key.dst,
                proto: ip_proto(e.key.proto),
                dst_port: (!is_icmp(e.key.proto)).then_some(e.key.dport),
                country: e.data.country,
                domain: e.data.domain_for_policy(),
                app: e.data.app_for_policy(),
                dns_names: &names,
            };
            if matches!(d2.domain, natfw_policy::Fact::Pending) {
                d2.domain = natfw_policy::Fact::Unidentifiable;
            }
            if matches!(d2.app, natfw_policy::Fact::Pending) {
                d2.app = natfw_policy::Fact::Unidentifiable;
            }
            let ev = policy.evaluate(&d2);
            if let Outcome::Decided { rule, action, by } = ev.outcome {
                e.data.verdict = match action {
                    Action::Accept => FlowVerdict::Accept,
                    Action::Drop => FlowVerdict::Drop,
                };
                e.data.rule = rule;
                e.data.decided_by = Some(by);
                policy.counters().get(rule).hit(now.as_nanos());
                e.data.decided_under = Some(Arc::clone(&policy));
                if !ev.monitors.is_empty() {
                    e.data.monitors = Some(ev.monitors.into_boxed_slice());
                }
            }
        } else if e.data.verdict == FlowVerdict::Pending {
            e.data.verdict = FlowVerdict::Accept;
        }
        let s = &mut self.stats;
        match reason {
            EndReason::Fin => s.flows_ended_fin += 1,
            EndReason::Rst => s.flows_ended_rst += 1,
            EndReason::Timeout => s.flows_ended_timeout += 1,
            EndReason::Denied => s.flows_ended_denied += 1,
            EndReason::Evicted => s.flows_ended_evicted += 1,
            EndReason::Shutdown => s.flows_ended_shutdown += 1,
        }
        credit_bytes(&e.data);
        let ev = e
            .data
            .end_event(&e.key, e.snat, now, reason, self.policy.load_full());
        self.sink.flow_end(ev);
    }

    /// Write the record of a flow that stays in the table as a tombstone.
    fn write_record(&mut self, now: Timestamp, r: FlowRef, reason: EndReason) {
        let policy = self.policy.load_full();
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        if e.data.recorded {
            return;
        }
        e.data.recorded = true;
        credit_bytes(&e.data);
        let ev = e.data.end_event(&e.key, e.snat, now, reason, policy);
        self.sink.flow_end(ev);
    }
}
