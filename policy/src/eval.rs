//! What is known about a flow, what the policy says about it, and the reference
//! (top-to-bottom) evaluation that the compiled policy must agree with.
//!
//! Each rule condition evaluates to one of four values ([`Tri`]): definitely false, definitely
//! true, pending (a fact it needs may still arrive) or unknown (the fact will never be known:
//! no SNI, ECH, IP literal, undecodable payload...). A rule is the conjunction of its
//! conditions: false wins, then pending, then unknown.
//!
//! Top to bottom over enabled rules:
//! - false: skip;
//! - true: `log` rules are recorded as monitors, `accept`/`drop` decide;
//! - pending: `log` rules are skipped, a deciding rule makes the outcome [`Outcome::Pending`];
//! - unknown: `loose` mode skips the rule; `strict` mode drops the flow if the rule is a
//!   deciding one (`log` rules are skipped).
//!
//! If no rule decides, the default action applies.

use std::net::IpAddr;

pub use crate::model::Action;
use crate::model::{
    Destination, DomainMode, DomainPattern, Firewall, Mode, Protocol, Rule, RuleAction, RuleId,
};
use crate::{App, CountryCode};

/// A fact about a flow that may not be known yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fact<T> {
    /// Not known yet; it may still arrive (the ClientHello is not complete, say).
    Pending,
    /// Known.
    Known(T),
    /// Will never be known for this flow (no SNI, IP literal, ECH, buffer limit, timeout...).
    Unidentifiable,
}

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProto {
    Tcp,
    Udp,
    /// ICMP or ICMPv6.
    Icmp,
    Other(u8),
}

/// Everything the policy may look at for one flow, as known at this moment.
#[derive(Debug, Clone, Copy)]
pub struct FlowFacts<'a> {
    /// Private source address (before SNAT).
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: IpProto,
    /// `None` for protocols without ports.
    pub dst_port: Option<u16>,
    /// Country of `dst`; `None` when the database has none.
    pub country: Option<CountryCode>,
    /// Normalised name the client sent (SNI, Host, QUIC SNI).
    pub domain: Fact<&'a str>,
    pub app: Fact<App>,
    /// Normalised names that resolved to `dst` (from DNS answers seen crossing the gateway or
    /// the gateway's own resolution of rule domains). Empty when none.
    pub dns_names: &'a [&'a str],
    /// Whether `dns_names` is complete for the flow's own name (`domain`): what a missing
    /// address means to an `fqdn_and_dns` rule.
    pub resolution: Resolution,
}

/// State of the gateway's own resolution of the name a flow presents (`FlowFacts::domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Resolution {
    /// Complete, or none will be made: a name missing from `dns_names` did not resolve to the
    /// destination.
    #[default]
    Final,
    /// The gateway may still resolve the name: a missing name is pending (the flow waits).
    Pending,
    /// The gateway's resolution failed or timed out: a missing name is unknown.
    Failed,
}

/// Which facts a pending outcome is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Needs {
    pub domain: bool,
    pub app: bool,
    /// The gateway's resolution of the flow's name (an `fqdn_and_dns` verification).
    pub dns: bool,
}

/// Why a decided outcome was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// The rule's conditions all held.
    Match,
    /// Strict mode: the rule needed a fact that cannot be identified.
    UnknownStrict,
    /// No rule decided; the default action applied.
    Default,
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Decided {
        rule: Option<RuleId>,
        action: Action,
        by: DecidedBy,
    },
    /// A deciding rule cannot be evaluated until these facts are known.
    Pending { rule: RuleId, needs: Needs },
}

/// Outcome plus the monitor (`log`) rules whose conditions held before it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evaluation {
    pub outcome: Outcome,
    /// In rule order.
    pub monitors: Vec<RuleId>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome::Decided {
            rule: None,
            action: Action::Accept,
            by: DecidedBy::Default,
        }
    }
}

/// Four-valued truth of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tri {
    True,
    /// The needed fact will never be known.
    Unknown,
    /// The needed fact may still arrive.
    Pending(Needs),
    False,
}

impl PartialOrd for Needs {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Needs {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.domain, self.app, self.dns).cmp(&(other.domain, other.app, other.dns))
    }
}

impl Tri {
    /// Conjunction: false wins, then pending (needs merged), then unknown, then true.
    pub fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::False, _) | (_, Tri::False) => Tri::False,
            (Tri::Pending(a), Tri::Pending(b)) => Tri::Pending(a.merge(b)),
            (Tri::Pending(a), _) | (_, Tri::Pending(a)) => Tri::Pending(a),
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            (Tri::True, Tri::True) => Tri::True,
        }
    }

    /// Disjunction: true wins, then pending, then unknown, then false.
    pub fn or(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::True, _) | (_, Tri::True) => Tri::True,
            (Tri::Pending(a), Tri::Pending(b)) => Tri::Pending(a.merge(b)),
            (Tri::Pending(a), _) | (_, Tri::Pending(a)) => Tri::Pending(a),
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            (Tri::False, Tri::False) => Tri::False,
        }
    }

    fn from_bool(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }
}

impl Needs {
    fn merge(self, b: Needs) -> Needs {
        Needs {
            domain: self.domain || b.domain,
            app: self.app || b.app,
            dns: self.dns || b.dns,
        }
    }
}

const NEED_DOMAIN: Needs = Needs {
    domain: true,
    app: false,
    dns: false,
};
const NEED_APP: Needs = Needs {
    domain: false,
    app: true,
    dns: false,
};
const NEED_DNS: Needs = Needs {
    domain: false,
    app: false,
    dns: true,
};

fn proto_matches(rule: Protocol, flow: IpProto) -> bool {
    matches!(
        (rule, flow),
        (Protocol::Any, _)
            | (Protocol::Tcp, IpProto::Tcp)
            | (Protocol::Udp, IpProto::Udp)
            | (Protocol::Icmp, IpProto::Icmp)
    )
}

fn any_pattern(patterns: &[DomainPattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

/// The destination condition of a rule ([`Tri`]), per its domain mode.
pub fn destination_tri(rule: &Rule, f: &FlowFacts<'_>) -> Tri {
    match &rule.destination {
        Destination::Any => Tri::True,
        Destination::Cidrs(nets) => Tri::from_bool(nets.iter().any(|n| n.contains(&f.dst))),
        Destination::Location(cc) => Tri::from_bool(f.country.is_some_and(|c| cc.contains(&c))),
        Destination::Domains(patterns) => {
            let fqdn = || match f.domain {
                Fact::Pending => Tri::Pending(NEED_DOMAIN),
                Fact::Unidentifiable => Tri::Unknown,
                Fact::Known(name) => Tri::from_bool(any_pattern(patterns, name)),
            };
            let dns = || Tri::from_bool(f.dns_names.iter().any(|n| any_pattern(patterns, n)));
            match rule.domain_mode {
                DomainMode::Fqdn => fqdn(),
                DomainMode::Dns => dns(),
                DomainMode::FqdnOrDns => fqdn().or(dns()),
                // The sent name must match and the destination must be one of *its* addresses;
                // while the gateway still resolves the name, that is pending.
                DomainMode::FqdnAndDns => match f.domain {
                    Fact::Known(name) if !any_pattern(patterns, name) => Tri::False,
                    Fact::Known(name) if f.dns_names.contains(&name) => Tri::True,
                    Fact::Known(_) => match f.resolution {
                        Resolution::Final => Tri::False,
                        Resolution::Pending => Tri::Pending(NEED_DNS),
                        Resolution::Failed => Tri::Unknown,
                    },
                    _ => fqdn(),
                },
            }
        }
    }
}

/// The application condition of a rule.
pub fn application_tri(rule: &Rule, f: &FlowFacts<'_>) -> Tri {
    match &rule.applications {
        None => Tri::True,
        Some(apps) => match f.app {
            Fact::Pending => Tri::Pending(NEED_APP),
            Fact::Unidentifiable => Tri::Unknown,
            Fact::Known(a) => Tri::from_bool(apps.contains(&a)),
        },
    }
}

/// The L3/L4 conditions of a rule (source, protocol, port): never pending.
pub fn l4_matches(rule: &Rule, f: &FlowFacts<'_>) -> bool {
    rule.source
        .as_ref()
        .is_none_or(|s| s.iter().any(|n| n.contains(&f.src)))
        && proto_matches(rule.protocol, f.proto)
        && rule.ports.as_ref().is_none_or(|ranges| {
            f.dst_port
                .is_some_and(|p| ranges.iter().any(|r| r.contains(&p)))
        })
}

/// The whole rule's truth for this flow.
pub fn rule_tri(rule: &Rule, f: &FlowFacts<'_>) -> Tri {
    if !rule.enabled || !l4_matches(rule, f) {
        return Tri::False;
    }
    destination_tri(rule, f).and(application_tri(rule, f))
}

/// Step of the top-to-bottom walk shared by the naive and the compiled evaluators: feed it each
/// candidate rule in order; it returns `Some(outcome)` once the walk is over.
#[derive(Debug)]
pub struct Walk {
    pub mode: Mode,
    pub monitors: Vec<RuleId>,
}

impl Walk {
    pub fn new(mode: Mode) -> Self {
        Walk {
            mode,
            monitors: Vec::new(),
        }
    }

    /// Consider rule `id` whose truth is `tri`.
    pub fn step(&mut self, id: RuleId, rule: &Rule, tri: Tri) -> Option<Outcome> {
        let deciding = match rule.action {
            RuleAction::Accept => Some(Action::Accept),
            RuleAction::Drop => Some(Action::Drop),
            RuleAction::Log => None,
        };
        match (tri, deciding) {
            (Tri::False, _) => None,
            (Tri::True, None) => {
                self.monitors.push(id);
                None
            }
            (Tri::True, Some(action)) => Some(Outcome::Decided {
                rule: Some(id),
                action,
                by: DecidedBy::Match,
            }),
            (Tri::Pending(_), None) | (Tri::Unknown, None) => None,
            (Tri::Pending(needs), Some(_)) => Some(Outcome::Pending { rule: id, needs }),
            (Tri::Unknown, Some(_)) => match self.mode {
                Mode::Loose => None,
                Mode::Strict => Some(Outcome::Decided {
                    rule: Some(id),
                    action: Action::Drop,
                    by: DecidedBy::UnknownStrict,
                }),
            },
        }
    }

    pub fn finish(self, outcome: Option<Outcome>, default_action: Action) -> Evaluation {
        Evaluation {
            outcome: outcome.unwrap_or(Outcome::Decided {
                rule: None,
                action: default_action,
                by: DecidedBy::Default,
            }),
            monitors: self.monitors,
        }
    }
}

/// Reference semantics: walk every rule top to bottom. O(rules) per flow; the compiled policy
/// exists so that the data path never does this.
pub fn naive_evaluate(fw: &Firewall, f: &FlowFacts<'_>) -> Evaluation {
    let mut walk = Walk::new(fw.mode);
    let mut outcome = None;
    for (i, rule) in fw.rules.iter().enumerate() {
        if let Some(o) = walk.step(RuleId(i as u32), rule, rule_tri(rule, f)) {
            outcome = Some(o);
            break;
        }
    }
    walk.finish(outcome, fw.default_action)
}
