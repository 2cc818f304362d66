//! Rendering a [`FlowEnd`] into the flow-log record: strings, RFC 3339 times, rule names and
//! the reason sentence. Runs on the writer thread, away from the packet path.

use std::fmt::Write as _;

use natfw_engine::conntrack::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use natfw_engine::engine::event::{
    benign, DomainSrc, FactState, FlowEnd, FlowInterim, FlowVerdict, WHY_ENDED_PENDING,
};
use natfw_policy::compile::CompiledPolicy;
use natfw_policy::{Action, App, DecidedBy, Destination, Mode, RuleId};

use crate::{format_rfc3339_millis, FlowRecord, InterimFields, LOG_TYPE_INTERIM};

/// Some fact may still arrive.
fn facts_pending(ev: &FlowEnd) -> bool {
    ev.domain_fact == FactState::Pending || ev.app_fact == FactState::Pending
}

/// A fact that could have been there was not identified (not: the protocol has none).
fn unknown(ev: &FlowEnd) -> bool {
    let app_unknown = ev.app_fact == FactState::Unidentifiable
        || (ev.app_fact == FactState::Known && ev.app == Some(App::Unknown));
    app_unknown
        || ev.evasion
        || (ev.domain_fact == FactState::Unidentifiable && ev.why.is_some_and(|w| !benign(w)))
}

fn dpi_state(ev: &FlowEnd, mode: Mode) -> &'static str {
    let tcp = ev.key.proto == PROTO_TCP;
    if tcp && !ev.established {
        return "tcp_not_establish";
    }
    let dropped = ev.verdict == FlowVerdict::Drop;
    match ev.decided_by {
        // Reset for carrying other bytes than those inspected: unknown, handled strictly in
        // every mode.
        _ if dropped && (ev.evasion || ev.unidentifiable_drop) => return "unknown_strict",
        Some(DecidedBy::UnknownStrict) => return "unknown_strict",
        Some(DecidedBy::Match) if dropped => return "policy_discard",
        _ => {}
    }
    if ev.why == Some(WHY_ENDED_PENDING) || facts_pending(ev) && ev.client_payload {
        return "analysing";
    }
    if tcp && !ev.client_payload && ev.app_fact != FactState::Known {
        return "no_payload";
    }
    if unknown(ev) {
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

/// The reason of a flow reset for an insertion evasion.
const EVASION_RESET: &str = "evasion attempt: a TCP segment carried other bytes for sequence numbers already inspected; flow reset both ways";

/// The reason of a drop by `firewall.on_unidentifiable: drop`.
const UNREADABLE_DROP: &str = "loose mode with firewall.on_unidentifiable drop: the verdict depended on a name the client made unreadable";

fn reason(ev: &FlowEnd, policy: &CompiledPolicy) -> String {
    let rule_name = |id: RuleId| {
        policy
            .rules()
            .get(id.0 as usize)
            .map_or_else(|| format!("#{}", id.0), |r| r.name.clone())
    };
    let mut s = String::new();
    if ev.fw_off {
        s.push_str("firewall disabled; SNAT only, accepted");
    } else {
        match (ev.verdict, ev.decided_by, ev.rule) {
            (_, Some(DecidedBy::Match), Some(id)) => {
                let _ = write!(s, "matched rule {}", rule_name(id));
                match (&ev.domain, ev.domain_src) {
                    (Some(d), src) if src != DomainSrc::None => {
                        let _ = write!(s, " (domain {d} from {})", src.human());
                    }
                    _ => match ev.app {
                        Some(a) if ev.app_fact == FactState::Known => {
                            let _ = write!(s, " (application {a})");
                        }
                        _ => {
                            let _ = write!(s, " (destination {})", ev.key.dst);
                        }
                    },
                }
            }
            (_, Some(DecidedBy::UnknownStrict), rule) if ev.dns_failed => {
                let _ = write!(
                    s,
                    "strict mode: the gateway could not resolve {} in time to verify the \
                     destination for rule {}",
                    ev.domain.as_deref().unwrap_or("the name"),
                    rule.map_or_else(|| "?".to_string(), rule_name)
                );
            }
            (_, Some(DecidedBy::UnknownStrict), rule) => {
                let rule_ref = rule.and_then(|id| policy.rules().get(id.0 as usize));
                let fact = match rule_ref.map(|r| &r.destination) {
                    Some(Destination::Domains(_))
                        if ev.domain_fact == FactState::Unidentifiable =>
                    {
                        "domain"
                    }
                    _ => "application",
                };
                let _ = write!(
                    s,
                    "strict mode: {fact} unidentifiable ({}) for rule {}",
                    ev.why.unwrap_or("not identified"),
                    rule.map_or_else(|| "?".to_string(), rule_name)
                );
            }
            // An accepted h2c connection that went on to another authority (the engine's
            // authority watch): cut off.
            (FlowVerdict::Drop, None, _)
                if ev.evasion && ev.why.is_some_and(|w| w.starts_with("h2")) =>
            {
                let _ = write!(
                    s,
                    "connection cut off: {} (evasion attempt)",
                    ev.why.unwrap_or_default()
                );
            }
            (FlowVerdict::Drop, None, _) if ev.unidentifiable_drop => {
                s.push_str(UNREADABLE_DROP);
            }
            (FlowVerdict::Drop, None, _) if ev.evasion => {
                s.push_str(EVASION_RESET);
            }
            (FlowVerdict::Pending, _, _) => {
                s.push_str("verdict pending when the flow ended");
            }
            (_, _, _) => {
                let action = if ev.verdict == FlowVerdict::Drop {
                    Action::Drop
                } else {
                    Action::Accept
                };
                let _ = write!(s, "no rule matched; default action {}", action.as_str());
            }
        }
    }
    if let Some(v) = ev.dns_verified {
        let _ = write!(
            s,
            "; destination tied to the name by {} ({})",
            v.human(),
            v.as_str()
        );
    }
    if ev.dns_failed && ev.decided_by != Some(DecidedBy::UnknownStrict) {
        let _ = write!(
            s,
            "; the gateway could not resolve {} in time (address unverified)",
            ev.domain.as_deref().unwrap_or("the name")
        );
    }
    if let Some(why) = ev.why.filter(|w| !benign(w)) {
        if ev.decided_by != Some(DecidedBy::UnknownStrict) {
            let what = if ev.domain_fact == FactState::Unidentifiable {
                "domain"
            } else {
                "application"
            };
            let _ = write!(s, "; {what} unidentifiable ({why})");
        }
    }
    if ev.evasion && !(ev.verdict == FlowVerdict::Drop && ev.decided_by.is_none()) {
        s.push_str("; overlapping TCP retransmission with different bytes (evasion attempt)");
    }
    s
}

/// The flow-log record of a finished flow. `gateway` is the configured gateway name.
pub fn render(ev: &FlowEnd, gateway: &str) -> FlowRecord {
    let policy = &*ev.policy;
    let key = &ev.key;
    let end_reason = ev.end_reason;
    let icmp = key.proto == PROTO_ICMP || key.proto == PROTO_ICMPV6;
    let proto = match key.proto {
        PROTO_TCP => "tcp".to_string(),
        PROTO_UDP => "udp".to_string(),
        PROTO_ICMP | PROTO_ICMPV6 => "icmp".to_string(),
        p => p.to_string(),
    };
    let action = match ev.verdict {
        FlowVerdict::Drop => Action::Drop,
        _ => Action::Accept,
    };
    let app = match (ev.app_fact, ev.app) {
        (FactState::Known, Some(a)) => a,
        _ => App::Unknown,
    };
    let monitors = ev
        .monitors
        .iter()
        .flat_map(|m| m.iter())
        .filter_map(|id| policy.rules().get(id.0 as usize).map(|r| r.name.clone()))
        .collect();
    let snat = ev.snat;
    FlowRecord {
        log_type: "flow".into(),
        gateway: gateway.into(),
        start_time: format_rfc3339_millis(ev.start),
        end_time: format_rfc3339_millis(ev.end),
        src_ip: key.src.to_string(),
        src_port: (!icmp).then_some(key.sport),
        dst_ip: key.dst.to_string(),
        dst_port: (!icmp).then_some(key.dport),
        ip_protocol: proto,
        snat_ip: snat.map(|(ip, _)| ip.to_string()),
        snat_port: snat.and_then(|(_, p)| (!icmp).then_some(p)),
        app_name: Some(app.as_str().to_string()),
        domain: ev.domain.as_deref().map(str::to_string),
        domain_source: ev.domain_src.label().map(str::to_string),
        ech: ev.ech,
        dst_country: ev.country.map(|c| c.as_str().to_string()),
        acl_rule_id: match ev.decided_by {
            Some(DecidedBy::Match | DecidedBy::UnknownStrict) => ev
                .rule
                .and_then(|id| policy.rules().get(id.0 as usize))
                .map(|r| r.name.clone()),
            _ => None,
        },
        monitor_rules: monitors,
        action: action.as_str().into(),
        app_dpi_state: dpi_state(ev, policy.mode()).into(),
        reason: reason(ev, policy),
        out_packet_count: ev.out.packets,
        out_packet_bytes: ev.out.bytes,
        in_packet_count: ev.inb.packets,
        in_packet_bytes: ev.inb.bytes,
        end_reason: end_reason.as_str().into(),
        dns_verified: ev.dns_verified.map(|v| v.as_str().to_string()),
        interim: None,
    }
}

/// `end_reason` of an interim record: the flow has not ended.
pub const INTERIM_END_REASON: &str = "active";

/// The flow-log record of a live flow (`flow_interim`): the end record's fields as the flow
/// stands (`end_time` = this record's time, counters since the start, `end_reason` `active`),
/// plus the interval's counters.
pub fn render_interim(ev: &FlowInterim, gateway: &str) -> FlowRecord {
    let mut r = render(&ev.flow, gateway);
    r.log_type = LOG_TYPE_INTERIM.into();
    r.end_reason = INTERIM_END_REASON.into();
    if ev.flow.verdict == FlowVerdict::Pending {
        r.reason = "verdict pending: identification in progress".into();
    }
    r.interim = Some(InterimFields {
        interim_seq: ev.seq,
        interval_start_time: format_rfc3339_millis(ev.interval_start),
        interval_out_packet_count: ev.interval_out.packets,
        interval_out_packet_bytes: ev.interval_out.bytes,
        interval_in_packet_count: ev.interval_inb.packets,
        interval_in_packet_bytes: ev.interval_inb.bytes,
    });
    r
}
