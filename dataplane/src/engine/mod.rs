//! The sans-I/O engine: connection tracking, SNAT, L7 identification, the verdict state machine
//! (SPEC.md "Verdict semantics") and flow-log records. The caller owns I/O and time: it hands
//! frames to [`Engine::process`], sends what [`Engine::drain_emits`] returns and calls
//! [`Engine::poll`] about every 100 ms.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::flowlog::FlowSink;
use crate::stats::EngineStats;
use crate::time::Timestamp;
pub use natfw_policy::compile::CompiledPolicy;
pub use natfw_policy::geo::GeoDb;

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
    /// IP fragment (not reassembled on this path).
    Fragment,
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
}

impl DropReason {
    /// Short stable label (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::Policy => "policy",
            DropReason::NoFlow => "no_flow",
            DropReason::NoSnatPort => "no_snat_port",
            DropReason::TableFull => "table_full",
            DropReason::HoldFull => "hold_full",
            DropReason::InvalidState => "invalid_state",
            DropReason::Unsupported => "unsupported",
            DropReason::Evasion => "evasion",
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
        }
    }
}

/// The engine. Single-threaded; run one per data-path thread.
pub struct Engine {
    policy: Arc<ArcSwap<CompiledPolicy>>,
    #[allow(dead_code)]
    geo: Arc<GeoDb>,
    #[allow(dead_code)]
    sink: Box<dyn FlowSink>,
    stats: EngineStats,
    emits: Vec<Emit>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
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
        _opts: EngineOptions,
    ) -> Result<Engine, EngineError> {
        Ok(Engine {
            policy: Arc::new(ArcSwap::from_pointee(CompiledPolicy::new(&cfg.firewall))),
            geo,
            sink,
            stats: EngineStats::default(),
            emits: Vec::new(),
        })
    }

    /// Decide one frame that arrived on `side`; may rewrite it in place.
    pub fn process(&mut self, _now: Timestamp, side: Side, frame: &mut [u8]) -> Verdict {
        match side {
            Side::Inside => self.stats.rx_inside.add(frame.len()),
            Side::Outside => self.stats.rx_outside.add(frame.len()),
        }
        Verdict::ToKernel
    }

    /// Move the frames the engine wants sent into `out`.
    pub fn drain_emits(&mut self, out: &mut Vec<Emit>) {
        out.append(&mut self.emits);
    }

    /// Expire timers (idle flows, pending verdicts). Call about every 100 ms.
    pub fn poll(&mut self, _now: Timestamp) {}

    /// End every flow (end reason `shutdown`), emitting their records.
    pub fn shutdown(&mut self, _now: Timestamp) {}

    /// The counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The live policy: store a new `CompiledPolicy` to hot-reload; flows already decided keep
    /// their verdict, pending ones are evaluated against the new policy.
    pub fn policy_handle(&self) -> Arc<ArcSwap<CompiledPolicy>> {
        Arc::clone(&self.policy)
    }

    /// Replay: a frame captured on the inside going TO a private host (a server reply) is
    /// rewritten to how it arrives at the outside (dst = the EIP/port/ICMP id the engine chose).
    /// Returns `false` when no flow matches it.
    pub fn to_outside_view(&self, _frame: &mut [u8]) -> bool {
        false
    }
}
