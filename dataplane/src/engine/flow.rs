//! Per-flow state kept in the conntrack table (compact: the L7 buffers live in a side table)
//! and the flow-log record built from it.

use std::fmt::Write as _;
use std::net::IpAddr;

use natfw_policy::compile::CompiledPolicy;
use natfw_policy::{Action, App, CountryCode, DecidedBy, Destination, Mode, RuleId};

use crate::conntrack::{FlowKey, TcpTrack, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::flowlog::{format_rfc3339_millis, FlowRecord};
use crate::stats::Counter;
use crate::time::Timestamp;

/// "No side-table entry".
pub(crate) const NO_IDENT: u32 = u32::MAX;

/// Why-not-identified reasons that are not a failure: the protocol has no name to give.
pub(crate) const WHY_NO_NAME_PROTO: &str = "the protocol carries no domain";
pub(crate) const WHY_DNS_QUERY: &str = "DNS query (the name is the question, not a destination)";
pub(crate) const WHY_UDP_NO_NAME: &str = "UDP payload carries no name";
pub(crate) const WHY_NOT_TLS_HTTP: &str = "payload is neither TLS nor HTTP";
/// A flow ended while its facts were still being identified.
pub(crate) const WHY_ENDED_PENDING: &str = "flow ended before identification finished";

fn benign(why: &str) -> bool {
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
pub(crate) enum FactState {
    Pending,
    Known,
    Unidentifiable,
}

/// Where the logged domain came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DomainSrc {
    None,
    Sni,
    Host,
    QuicSni,
    Dns,
}

impl DomainSrc {
    pub(crate) fn label(self) -> Option<&'static str> {
        match self {
            DomainSrc::None => None,
            DomainSrc::Sni => Some("sni"),
            DomainSrc::Host => Some("host"),
            DomainSrc::QuicSni => Some("quic_sni"),
            DomainSrc::Dns => Some("dns"),
        }
    }

    fn human(self) -> &'static str {
        match self {
            DomainSrc::None => "nowhere",
            DomainSrc::Sni => "TLS SNI",
            DomainSrc::Host => "HTTP Host",
            DomainSrc::QuicSni => "QUIC SNI",
            DomainSrc::Dns => "DNS",
        }
    }
}

/// The flow's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowVerdict {
    Pending,
    Accept,
    Drop,
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    Fin,
    Rst,
    Timeout,
    Denied,
    Evicted,
    Shutdown,
}

impl EndReason {
    fn as_str(self) -> &'static str {
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

/// Everything the engine keeps per flow besides the conntrack entry itself.
#[derive(Debug)]
pub(crate) struct FlowData {
    pub start: Timestamp,
    pub out: Counter,
    pub inb: Counter,
    pub tcp: TcpTrack,
    pub verdict: FlowVerdict,
    pub decided_by: Option<DecidedBy>,
    pub rule: Option<RuleId>,
    pub monitors: Option<Box<[RuleId]>>,
    /// The policy that decided the flow: `rule` and `monitors` index into it, so the record
    /// names the right rules after a hot reload swapped in another policy.
    pub decided_under: Option<std::sync::Arc<CompiledPolicy>>,
    /// Name for the log (sent name, or the name the client resolved, see `domain_src`).
    pub domain: Option<Box<str>>,
    pub domain_src: DomainSrc,
    /// The domain fact for the policy (only names the client *sent* count as known).
    pub domain_fact: FactState,
    pub app: Option<App>,
    pub app_fact: FactState,
    /// First reason a fact became unidentifiable.
    pub why: Option<&'static str>,
    pub country: Option<CountryCode>,
    pub ech: bool,
    /// Conflicting retransmission seen.
    pub evasion: bool,
    /// The record has been written; the entry only absorbs stragglers until it times out.
    pub recorded: bool,
    /// The client sent payload.
    pub client_payload: bool,
    /// TCP reached ESTABLISHED at some point.
    pub established: bool,
    /// The flow only carried DNS (short UDP timeout).
    pub dns_only: bool,
    /// Firewall disabled when the flow started.
    pub fw_off: bool,
    /// Something of this flow left by the outside (else the record shows no SNAT).
    pub sent: bool,
    /// SYN sequence numbers (client, server).
    pub isn_c: u32,
    pub isn_s: u32,
    /// Side-table index of the L7 state, or [`NO_IDENT`].
    pub ident: u32,
}

impl FlowData {
    pub(crate) fn new(now: Timestamp, proto: u8, country: Option<CountryCode>) -> Self {
        let icmp = proto == PROTO_ICMP || proto == PROTO_ICMPV6;
        let l7 = proto == PROTO_TCP || proto == PROTO_UDP;
        FlowData {
            start: now,
            out: Counter::default(),
            inb: Counter::default(),
            tcp: TcpTrack::new(),
            verdict: FlowVerdict::Pending,
            decided_by: None,
            rule: None,
            monitors: None,
            decided_under: None,
            domain: None,
            domain_src: DomainSrc::None,
            domain_fact: if l7 {
                FactState::Pending
            } else {
                FactState::Unidentifiable
            },
            app: icmp.then_some(App::Icmp),
            app_fact: if icmp {
                FactState::Known
            } else if l7 {
                FactState::Pending
            } else {
                FactState::Unidentifiable
            },
            why: None,
            country,
            ech: false,
            evasion: false,
            recorded: false,
            client_payload: false,
            established: false,
            dns_only: false,
            fw_off: false,
            sent: false,
            isn_c: 0,
            isn_s: 0,
            ident: NO_IDENT,
        }
    }

    /// Some fact may still arrive.
    pub(crate) fn facts_pending(&self) -> bool {
        self.domain_fact == FactState::Pending || self.app_fact == FactState::Pending
    }

    /// Mark every pending fact unidentifiable, for `why`.
    pub(crate) fn give_up(&mut self, why: &'static str) {
        if self.domain_fact == FactState::Pending {
            self.domain_fact = FactState::Unidentifiable;
            self.why.get_or_insert(why);
        }
        if self.app_fact == FactState::Pending {
            self.app_fact = FactState::Unidentifiable;
            self.why.get_or_insert(why);
        }
    }

    /// Set the name the client sent.
    pub(crate) fn set_sent_domain(&mut self, name: &str, src: DomainSrc) {
        self.domain = Some(name.into());
        self.domain_src = src;
        self.domain_fact = FactState::Known;
    }

    /// The domain fact as the policy sees it.
    pub(crate) fn domain_for_policy(&self) -> natfw_policy::Fact<&str> {
        use natfw_policy::Fact;
        match (self.domain_fact, self.domain.as_deref()) {
            (FactState::Pending, _) => Fact::Pending,
            (FactState::Known, Some(d)) => Fact::Known(d),
            _ => Fact::Unidentifiable,
        }
    }

    /// The app fact as the policy sees it.
    pub(crate) fn app_for_policy(&self) -> natfw_policy::Fact<App> {
        use natfw_policy::Fact;
        match (self.app_fact, self.app) {
            (FactState::Pending, _) => Fact::Pending,
            (FactState::Known, Some(a)) => Fact::Known(a),
            _ => Fact::Unidentifiable,
        }
    }

    /// A fact that could have been there was not identified (not: the protocol has none).
    fn unknown(&self) -> bool {
        let app_unknown = self.app_fact == FactState::Unidentifiable
            || (self.app_fact == FactState::Known && self.app == Some(App::Unknown));
        app_unknown
            || self.evasion
            || (self.domain_fact == FactState::Unidentifiable
                && self.why.is_some_and(|w| !benign(w)))
    }

    fn dpi_state(&self, key: &FlowKey, mode: Mode) -> &'static str {
        let tcp = key.proto == PROTO_TCP;
        if tcp && !self.established {
            return "tcp_not_establish";
        }
        let dropped = self.verdict == FlowVerdict::Drop;
        match self.decided_by {
            _ if dropped && self.evasion && mode == Mode::Strict => return "unknown_strict",
            Some(DecidedBy::UnknownStrict) => return "unknown_strict",
            Some(DecidedBy::Match) if dropped => return "policy_discard",
            _ => {}
        }
        if self.why == Some(WHY_ENDED_PENDING) || self.facts_pending() && self.client_payload {
            return "analysing";
        }
        if tcp && !self.client_payload && self.app_fact != FactState::Known {
            return "no_payload";
        }
        if self.unknown() {
            return match mode {
                Mode::Loose => "unknown_loose",
                Mode::Strict => "unknown_strict",
            };
        }
        if dropped {
            return "policy_discard";
        }
        "success"
    }

    fn reason(&self, key: &FlowKey, policy: &CompiledPolicy) -> String {
        let rule_name = |id: RuleId| {
            policy
                .rules()
                .get(id.0 as usize)
                .map_or_else(|| format!("#{}", id.0), |r| r.name.clone())
        };
        let mut s = String::new();
        if self.fw_off {
            s.push_str("firewall disabled; SNAT only, accepted");
        } else {
            match (self.verdict, self.decided_by, self.rule) {
                (_, Some(DecidedBy::Match), Some(id)) => {
                    let _ = write!(s, "matched rule {}", rule_name(id));
                    match (&self.domain, self.domain_src) {
                        (Some(d), src) if src != DomainSrc::None => {
                            let _ = write!(s, " (domain {d} from {})", src.human());
                        }
                        _ => match self.app {
                            Some(a) if self.app_fact == FactState::Known => {
                                let _ = write!(s, " (application {a})");
                            }
                            _ => {
                                let _ = write!(s, " (destination {})", key.dst);
                            }
                        },
                    }
                }
                (_, Some(DecidedBy::UnknownStrict), rule) => {
                    let rule_ref = rule.and_then(|id| policy.rules().get(id.0 as usize));
                    let fact = match rule_ref.map(|r| &r.destination) {
                        Some(Destination::Domains(_))
                            if self.domain_fact == FactState::Unidentifiable =>
                        {
                            "domain"
                        }
                        _ => "application",
                    };
                    let _ = write!(
                        s,
                        "strict mode: {fact} unidentifiable ({}) for rule {}",
                        self.why.unwrap_or("not identified"),
                        rule.map_or_else(|| "?".to_string(), rule_name)
                    );
                }
                (FlowVerdict::Drop, None, _) if self.evasion => {
                    s.push_str("strict mode: overlapping TCP retransmission with different bytes (evasion attempt)");
                }
                (FlowVerdict::Pending, _, _) => {
                    s.push_str("verdict pending when the flow ended");
                }
                (_, _, _) => {
                    let action = if self.verdict == FlowVerdict::Drop {
                        Action::Drop
                    } else {
                        Action::Accept
                    };
                    let _ = write!(s, "no rule matched; default action {}", action.as_str());
                }
            }
        }
        if let Some(why) = self.why.filter(|w| !benign(w)) {
            if self.decided_by != Some(DecidedBy::UnknownStrict) {
                let what = if self.domain_fact == FactState::Unidentifiable {
                    "domain"
                } else {
                    "application"
                };
                let _ = write!(s, "; {what} unidentifiable ({why})");
            }
        }
        if self.evasion && !(self.verdict == FlowVerdict::Drop && self.decided_by.is_none()) {
            s.push_str("; overlapping TCP retransmission with different bytes (evasion attempt)");
        }
        s
    }

    /// The flow-log record of this flow.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        key: &FlowKey,
        snat: Option<(IpAddr, u16)>,
        gateway: &str,
        end: Timestamp,
        end_reason: EndReason,
        policy: &CompiledPolicy,
    ) -> FlowRecord {
        let policy = self.decided_under.as_deref().unwrap_or(policy);
        let icmp = key.proto == PROTO_ICMP || key.proto == PROTO_ICMPV6;
        let proto = match key.proto {
            PROTO_TCP => "tcp".to_string(),
            PROTO_UDP => "udp".to_string(),
            PROTO_ICMP | PROTO_ICMPV6 => "icmp".to_string(),
            p => p.to_string(),
        };
        let action = match self.verdict {
            FlowVerdict::Drop => Action::Drop,
            _ => Action::Accept,
        };
        let app = match (self.app_fact, self.app) {
            (FactState::Known, Some(a)) => a,
            _ => App::Unknown,
        };
        let monitors = self
            .monitors
            .iter()
            .flat_map(|m| m.iter())
            .filter_map(|id| policy.rules().get(id.0 as usize).map(|r| r.name.clone()))
            .collect();
        let snat = snat.filter(|_| self.sent);
        FlowRecord {
            log_type: "flow".into(),
            gateway: gateway.into(),
            start_time: format_rfc3339_millis(self.start),
            end_time: format_rfc3339_millis(end.max(self.start)),
            src_ip: key.src.to_string(),
            src_port: (!icmp).then_some(key.sport),
            dst_ip: key.dst.to_string(),
            dst_port: (!icmp).then_some(key.dport),
            ip_protocol: proto,
            snat_ip: snat.map(|(ip, _)| ip.to_string()),
            snat_port: snat.and_then(|(_, p)| (!icmp).then_some(p)),
            app_name: Some(app.as_str().to_string()),
            domain: self.domain.as_deref().map(str::to_string),
            domain_source: self.domain_src.label().map(str::to_string),
            ech: self.ech,
            dst_country: self.country.map(|c| c.as_str().to_string()),
            acl_rule_id: match self.decided_by {
                Some(DecidedBy::Match | DecidedBy::UnknownStrict) => self
                    .rule
                    .and_then(|id| policy.rules().get(id.0 as usize))
                    .map(|r| r.name.clone()),
                _ => None,
            },
            monitor_rules: monitors,
            action: action.as_str().into(),
            app_dpi_state: self.dpi_state(key, policy.mode()).into(),
            reason: self.reason(key, policy),
            out_packet_count: self.out.packets,
            out_packet_bytes: self.out.bytes,
            in_packet_count: self.inb.packets,
            in_packet_bytes: self.inb.bytes,
            end_reason: end_reason.as_str().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Entry;

    /// Per-flow state is what makes 1,000,000 flows fit: keep an eye on it.
    #[test]
    fn per_flow_state_is_compact() {
        let entry = std::mem::size_of::<Entry<FlowData>>();
        assert!(entry <= 224, "conntrack entry grew to {entry} bytes");
    }
}
