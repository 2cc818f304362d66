//! What leaves the engine when a flow ends: [`FlowEnd`], plain data (numbers, enums, the
//! deciding rule's index and the policy it indexes into), handed to a [`FlowSink`]. The flow
//! log (natfw-flowlog) renders the JSON record from it on its writer thread, so the packet path
//! formats no string and reads no clock.

use std::net::IpAddr;
use std::sync::Arc;

use natfw_policy::compile::CompiledPolicy;
use natfw_policy::{App, CountryCode, DecidedBy, RuleId};

use crate::conntrack::FlowKey;
use crate::stats::Counter;
use crate::time::Timestamp;

/// Why-not-identified reasons that are not a failure: the protocol has no name to give.
pub const WHY_NO_NAME_PROTO: &str = "the protocol carries no domain";
pub const WHY_DNS_QUERY: &str = "DNS query (the name is the question, not a destination)";
pub const WHY_UDP_NO_NAME: &str = "UDP payload carries no name";
pub const WHY_NOT_TLS_HTTP: &str = "payload is neither TLS nor HTTP";
/// A flow ended while its facts were still being identified.
pub const WHY_ENDED_PENDING: &str = "flow ended before identification finished";

/// The client made its name unreadable: reasons `firewall.on_unidentifiable` applies to.
pub const WHY_HOLD_LIMIT: &str = "hold buffer limit reached";
pub const WHY_REASM_LIMIT: &str = "reassembly buffer limit reached";
pub const WHY_TIMEOUT: &str = "identification timed out";
/// The TLS parser's reason for a ClientHello declared over its size limit.
pub const WHY_HELLO_TOO_LARGE: &str = "clienthello too large";

/// `why` says the client made the name impossible to read (over the hold or reassembly
/// limits, or stopped before the name until the identification deadline).
pub fn client_made_unreadable(why: &str) -> bool {
    [
        WHY_HOLD_LIMIT,
        WHY_REASM_LIMIT,
        WHY_TIMEOUT,
        WHY_HELLO_TOO_LARGE,
    ]
    .contains(&why)
}

/// `why` says the protocol has no name to give (not a failure to identify one).
pub fn benign(why: &str) -> bool {
    [
        WHY_NO_NAME_PROTO,
        WHY_DNS_QUERY,
        WHY_UDP_NO_NAME,
        WHY_NOT_TLS_HTTP,
    ]
    .contains(&why)
}

/// State of one L7 fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactState {
    Pending,
    Known,
    Unidentifiable,
}

/// Where the logged domain came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainSrc {
    None,
    Sni,
    Host,
    QuicSni,
    Dns,
}

impl DomainSrc {
    pub fn label(self) -> Option<&'static str> {
        match self {
            DomainSrc::None => None,
            DomainSrc::Sni => Some("sni"),
            DomainSrc::Host => Some("host"),
            DomainSrc::QuicSni => Some("quic_sni"),
            DomainSrc::Dns => Some("dns"),
        }
    }

    /// Where the name came from, for a sentence.
    pub fn human(self) -> &'static str {
        match self {
            DomainSrc::None => "nowhere",
            DomainSrc::Sni => "TLS SNI",
            DomainSrc::Host => "HTTP Host",
            DomainSrc::QuicSni => "QUIC SNI",
            DomainSrc::Dns => "DNS",
        }
    }
}

/// How the destination address was tied to a name by the rule that decided (`dns_verified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsVerified {
    /// A DNS answer to this client that crossed the gateway.
    ClientAnswer,
    /// The gateway's own resolution (of a rule name, or of the name the flow presented).
    GatewayResolution,
    /// An answer the gateway's DNS forwarder relayed to this client.
    Forwarder,
}

impl DnsVerified {
    /// The flow-log value.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsVerified::ClientAnswer => "client_answer",
            DnsVerified::GatewayResolution => "gateway_resolution",
            DnsVerified::Forwarder => "forwarder",
        }
    }

    /// For the reason sentence.
    pub fn human(self) -> &'static str {
        match self {
            DnsVerified::ClientAnswer => "a DNS answer to the client",
            DnsVerified::GatewayResolution => "the gateway's own resolution",
            DnsVerified::Forwarder => "the gateway's DNS forwarder",
        }
    }
}

/// The flow's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowVerdict {
    Pending,
    Accept,
    Drop,
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Fin,
    Rst,
    Timeout,
    Denied,
    Evicted,
    Shutdown,
}

impl EndReason {
    /// The flow-log value (`end_reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Timeout => "timeout",
            EndReason::Denied => "denied",
            EndReason::Evicted => "evicted",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// One finished flow, as the engine saw it.
#[derive(Debug, Clone)]
pub struct FlowEnd {
    /// The private side's view (before SNAT).
    pub key: FlowKey,
    /// The translated source, if anything of the flow left by the outside.
    pub snat: Option<(IpAddr, u16)>,
    pub start: Timestamp,
    /// Not before `start`.
    pub end: Timestamp,
    pub end_reason: EndReason,
    pub verdict: FlowVerdict,
    pub decided_by: Option<DecidedBy>,
    /// The deciding rule (an index into `policy`).
    pub rule: Option<RuleId>,
    /// Monitor (`log`) rules that matched.
    pub monitors: Option<Box<[RuleId]>>,
    /// The policy `rule` and `monitors` index into: the one that decided the flow.
    pub policy: Arc<CompiledPolicy>,
    pub domain: Option<Box<str>>,
    pub domain_src: DomainSrc,
    pub domain_fact: FactState,
    pub app: Option<App>,
    pub app_fact: FactState,
    /// First reason a fact became unidentifiable (see [`benign`]).
    pub why: Option<&'static str>,
    /// How the deciding rule tied the destination address to a name (rules in `dns`,
    /// `fqdn_or_dns` through DNS, `fqdn_and_dns`); `None` when no DNS fact decided.
    pub dns_verified: Option<DnsVerified>,
    /// The gateway's resolution of the flow's name failed or timed out while a rule waited
    /// for it.
    pub dns_failed: bool,
    pub country: Option<CountryCode>,
    pub ech: bool,
    /// An overlapping retransmission carried different bytes.
    pub evasion: bool,
    /// Dropped by `firewall.on_unidentifiable: drop` (loose mode): the verdict depended on a
    /// name the client made unreadable (`why` says how).
    pub unidentifiable_drop: bool,
    pub client_payload: bool,
    pub established: bool,
    /// The firewall was off when the flow started (SNAT only).
    pub fw_off: bool,
    pub out: Counter,
    pub inb: Counter,
}

/// A record of a flow that is still alive (`logging.interim_interval`): the flow as it stands
/// at `flow.end` (its counters since the start; `flow.end_reason` means nothing here), and
/// what it carried since the previous interim record (or its start).
#[derive(Debug, Clone)]
pub struct FlowInterim {
    /// The flow so far: `end` is the time of this record, `out`/`inb` count since the start.
    pub flow: FlowEnd,
    /// 1 for the first interim record of the flow, then the number of whole intervals the flow
    /// had lived when this record was made (a sweep that came late skips numbers).
    pub seq: u32,
    /// Start of the span `interval_out` / `interval_inb` count: the previous interim record's
    /// time, or the flow's start for the first one.
    pub interval_start: Timestamp,
    pub interval_out: Counter,
    pub interval_inb: Counter,
}

/// Where the engine hands finished flows. Must never block the data path.
pub trait FlowSink: Send {
    /// Take one finished flow. Implementations that cannot keep up count it as dropped.
    fn flow_end(&mut self, ev: FlowEnd);

    /// Take one interim record of a live flow. Sinks that keep no interim records ignore it.
    fn flow_interim(&mut self, ev: FlowInterim) {
        let _ = ev;
    }
}

/// Keeps events in memory (tests, fuzzing).
impl FlowSink for Vec<FlowEnd> {
    fn flow_end(&mut self, ev: FlowEnd) {
        self.push(ev);
    }
}

/// Discards events (benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl FlowSink for NullSink {
    fn flow_end(&mut self, _ev: FlowEnd) {}
}
