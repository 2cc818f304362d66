//! The compiled ACL: the same answer as [`naive_evaluate`](crate::eval::naive_evaluate)
//! without looking at every rule.
//!
//! Each rule condition is indexed by dimension (source prefix, protocol, destination port,
//! destination, application). For a flow, each dimension yields the bitset of rules that are
//! not definitely false on it: the rules without a condition there ("any") OR-ed with the
//! sparse hits of the dimension's matcher. The dimensions are AND-ed, and only the surviving
//! rules are walked, in rule order, through the very same per-rule evaluation and walk as the
//! reference ([`rule_tri`], [`Walk`]). The index is conservative: it may let through a rule that
//! turns out false (that rule is then skipped by `rule_tri`), never drop one that is not false,
//! so the semantics cannot drift from the reference.

use rustc_hash::FxHashMap;

use crate::app::App;
use crate::domain::DomainSet;
use crate::eval::{rule_tri, Evaluation, Fact, FlowFacts, IpProto, Walk};
use crate::model::{
    Action, CountryCode, Destination, DomainMode, DomainPattern, Firewall, Mode, Protocol, Rule,
    RuleId,
};
use crate::ports::{PortSet, PortSetBuilder};
use crate::prefix::{PrefixSet, PrefixSetBuilder};

/// A fixed-size set of rule ids.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(words: usize) -> Self {
        Bits(vec![0; words].into_boxed_slice())
    }

    #[inline]
    fn set(&mut self, id: u32) {
        if let Some(w) = self.0.get_mut((id / 64) as usize) {
            *w |= 1 << (id % 64);
        }
    }

    #[inline]
    fn set_all(&mut self, ids: &[u32]) {
        for &id in ids {
            self.set(id);
        }
    }

    #[inline]
    fn and_with(&mut self, other: &[u64]) {
        for (a, b) in self.0.iter_mut().zip(other) {
            *a &= b;
        }
    }

    #[inline]
    fn or_with(&mut self, other: &[u64]) {
        for (a, b) in self.0.iter_mut().zip(other) {
            *a |= b;
        }
    }
}

/// Flow protocol classes, the index of [`CompiledPolicy::proto`].
fn proto_class(p: IpProto) -> usize {
    match p {
        IpProto::Tcp => 0,
        IpProto::Udp => 1,
        IpProto::Icmp => 2,
        IpProto::Other(_) => 3,
    }
}

fn rule_proto_class(p: Protocol) -> Option<usize> {
    match p {
        Protocol::Any => None,
        Protocol::Tcp => Some(0),
        Protocol::Udp => Some(1),
        Protocol::Icmp => Some(2),
    }
}

/// The compiled, immutable form of a [`Firewall`]. Cheap to share (`Send + Sync`); build a
/// new one on every configuration change.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    fw: Firewall,
    words: usize,
    /// Per flow protocol class (TCP, UDP, ICMP, other): enabled rules whose protocol
    /// condition holds. Every other bitset is AND-ed into a copy of one of these.
    proto: [Bits; 4],
    /// Source: rules without a source condition, and the prefix index. `None` when no
    /// enabled rule has a source condition (the dimension cannot exclude anything).
    src: Option<(Bits, PrefixSet)>,
    /// Destination port: rules without a port condition, and the range index.
    port: Option<(Bits, PortSet)>,
    dst: Option<DstIndex>,
    app: Option<AppIndex>,
}

#[derive(Debug, Clone)]
struct DstIndex {
    /// `Destination::Any` rules.
    any: Bits,
    cidrs: PrefixSet,
    countries: FxHashMap<CountryCode, Vec<u32>>,
    /// Every domain rule's patterns, whatever its mode: a hit is a candidate (conservative).
    domains: DomainSet<u32>,
    /// Domain rules whose mode looks at the sent name: they are pending or unknown (not
    /// false) while that name is not known.
    name_modes: Bits,
}

#[derive(Debug, Clone)]
struct AppIndex {
    /// Rules without an application condition.
    any: Bits,
    by_app: FxHashMap<App, Vec<u32>>,
}

impl CompiledPolicy {
    /// Compile `fw`. Disabled rules are left out of every index (they never match).
    pub fn new(fw: &Firewall) -> CompiledPolicy {
        let n = fw.rules.len();
        let words = n.div_ceil(64).max(1);
        let mut proto = [
            Bits::new(words),
            Bits::new(words),
            Bits::new(words),
            Bits::new(words),
        ];
        let mut src_any = Bits::new(words);
        let mut src = PrefixSetBuilder::default();
        let mut src_used = false;
        let mut port_any = Bits::new(words);
        let mut ports = PortSetBuilder::default();
        let mut port_used = false;
        let mut dst_any = Bits::new(words);
        let mut cidrs = PrefixSetBuilder::default();
        let mut countries: FxHashMap<CountryCode, Vec<u32>> = FxHashMap::default();
        let mut domains = DomainSet::new();
        let mut name_modes = Bits::new(words);
        let mut dst_used = false;
        let mut app_any = Bits::new(words);
        let mut by_app: FxHashMap<App, Vec<u32>> = FxHashMap::default();
        let mut app_used = false;

        for (i, rule) in fw.rules.iter().enumerate() {
            if !rule.enabled {
                continue;
            }
            let id = i as u32;
            match rule_proto_class(rule.protocol) {
                None => proto.iter_mut().for_each(|b| b.set(id)),
                Some(c) => proto[c].set(id),
            }
            match &rule.source {
                None => src_any.set(id),
                Some(nets) => {
                    src_used = true;
                    nets.iter().for_each(|net| src.insert(net, id));
                }
            }
            match &rule.ports {
                None => port_any.set(id),
                Some(ranges) => {
                    port_used = true;
                    ranges.iter().for_each(|r| ports.insert(r, id));
                }
            }
            match &rule.destination {
                Destination::Any => dst_any.set(id),
                Destination::Cidrs(nets) => {
                    dst_used = true;
                    nets.iter().for_each(|net| cidrs.insert(net, id));
                }
                Destination::Location(ccs) => {
                    dst_used = true;
                    for cc in ccs {
                        countries.entry(*cc).or_default().push(id);
                    }
                }
                Destination::Domains(pats) => {
                    dst_used = true;
                    pats.iter().for_each(|p| domains.insert(p, id));
                    if rule.domain_mode != DomainMode::Dns {
                        name_modes.set(id);
                    }
                }
            }
            match &rule.applications {
                None => app_any.set(id),
                Some(apps) => {
                    app_used = true;
                    for a in apps {
                        by_app.entry(*a).or_default().push(id);
                    }
                }
            }
        }
        for v in countries.values_mut().chain(by_app.values_mut()) {
            v.dedup();
        }
        CompiledPolicy {
            fw: fw.clone(),
            words,
            proto,
            src: src_used.then(|| (src_any, src.build())),
            port: port_used.then(|| (port_any, ports.build())),
            dst: dst_used.then(|| DstIndex {
                any: dst_any,
                cidrs: cidrs.build(),
                countries,
                domains,
                name_modes,
            }),
            app: app_used.then_some(AppIndex {
                any: app_any,
                by_app,
            }),
        }
    }

    /// Evaluate a flow: identical to [`naive_evaluate`](crate::eval::naive_evaluate) on the
    /// firewall this policy was compiled from.
    pub fn evaluate(&self, f: &FlowFacts<'_>) -> Evaluation {
        let cand = self.candidates(f);
        let mut walk = Walk::new(self.fw.mode);
        let mut outcome = None;
        'words: for (w, &word) in cand.0.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let id = (w * 64) as u32 + word.trailing_zeros();
                word &= word - 1;
                let rule = &self.fw.rules[id as usize];
                if let Some(o) = walk.step(RuleId(id), rule, rule_tri(rule, f)) {
                    outcome = Some(o);
                    break 'words;
                }
            }
        }
        walk.finish(outcome, self.fw.default_action)
    }

    /// Rules that are not definitely false for `f` (a superset of those that are not).
    fn candidates(&self, f: &FlowFacts<'_>) -> Bits {
        let mut acc = self.proto[proto_class(f.proto)].clone();
        let mut tmp = Bits::new(self.words);
        if let Some((any, set)) = &self.src {
            tmp.0.copy_from_slice(&any.0);
            set.for_each(f.src, |ids| tmp.set_all(ids));
            acc.and_with(&tmp.0);
        }
        if let Some((any, set)) = &self.port {
            tmp.0.copy_from_slice(&any.0);
            if let Some(p) = f.dst_port {
                set.for_each(p, |ids| tmp.set_all(ids));
            }
            acc.and_with(&tmp.0);
        }
        if let Some(d) = &self.dst {
            tmp.0.copy_from_slice(&d.any.0);
            d.cidrs.for_each(f.dst, |ids| tmp.set_all(ids));
            if let Some(ids) = f.country.and_then(|c| d.countries.get(&c)) {
                tmp.set_all(ids);
            }
            match f.domain {
                Fact::Known(name) => d.domains.for_each_match(name, |ids| tmp.set_all(ids)),
                Fact::Pending | Fact::Unidentifiable => tmp.or_with(&d.name_modes.0),
            }
            for name in f.dns_names {
                d.domains.for_each_match(name, |ids| tmp.set_all(ids));
            }
            acc.and_with(&tmp.0);
        }
        if let (Some(a), Fact::Known(app)) = (&self.app, f.app) {
            tmp.0.copy_from_slice(&a.any.0);
            if let Some(ids) = a.by_app.get(&app) {
                tmp.set_all(ids);
            }
            acc.and_with(&tmp.0);
        }
        acc
    }

    /// The rules, in order; [`RuleId`] indexes this slice.
    pub fn rules(&self) -> &[Rule] {
        &self.fw.rules
    }

    /// One rule. Panics if `id` did not come from this policy (an [`Evaluation`] of it).
    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.fw.rules[id.0 as usize]
    }

    /// Loose or strict.
    pub fn mode(&self) -> Mode {
        self.fw.mode
    }

    /// The action when no rule decides.
    pub fn default_action(&self) -> Action {
        self.fw.default_action
    }

    /// Whether the firewall inspects traffic at all (`false` = SNAT only).
    pub fn enabled(&self) -> bool {
        self.fw.enabled
    }

    /// The firewall this policy was compiled from.
    pub fn firewall(&self) -> &Firewall {
        &self.fw
    }

    /// Exact names used by enabled rules in a DNS-based domain mode (`dns`, `fqdn_or_dns`,
    /// `fqdn_and_dns`): the gateway resolves these itself so that their addresses are known
    /// even when the client's own lookup did not cross the gateway. Wildcards cannot be
    /// resolved and are left out. Sorted, without duplicates; empty when the firewall is off.
    pub fn dns_mode_domains(&self) -> Vec<DomainPattern> {
        if !self.fw.enabled {
            return Vec::new();
        }
        let mut out: Vec<DomainPattern> = self
            .fw
            .rules
            .iter()
            .filter(|r| r.enabled && r.domain_mode != DomainMode::Fqdn)
            .filter_map(|r| match &r.destination {
                Destination::Domains(p) => Some(p),
                _ => None,
            })
            .flatten()
            .filter(|p| matches!(p, DomainPattern::Exact(_)))
            .cloned()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{naive_evaluate, DecidedBy, Needs, Outcome};
    use crate::model::{Pos, RuleAction};
    use std::net::IpAddr;

    fn rule(name: &str, action: RuleAction) -> Rule {
        Rule {
            name: name.into(),
            description: String::new(),
            source: None,
            destination: Destination::Any,
            domain_mode: DomainMode::Fqdn,
            protocol: Protocol::Any,
            ports: None,
            applications: None,
            action,
            enabled: true,
            pos: Pos::default(),
        }
    }

    fn fw(rules: Vec<Rule>) -> Firewall {
        Firewall {
            enabled: true,
            mode: Mode::Loose,
            default_action: Action::Drop,
            rules,
        }
    }

    fn flow<'a>(dst: &str, port: u16, domain: Fact<&'a str>) -> FlowFacts<'a> {
        FlowFacts {
            src: "10.0.0.5".parse().unwrap(),
            dst: dst.parse::<IpAddr>().unwrap(),
            proto: IpProto::Tcp,
            dst_port: Some(port),
            country: CountryCode::new("DE"),
            domain,
            app: Fact::Pending,
            dns_names: &[],
        }
    }

    #[test]
    fn picks_first_matching_rule_and_collects_monitors() {
        let mut log = rule("log-web", RuleAction::Log);
        log.ports = Some(vec![443..=443]);
        let mut cidr = rule("drop-net", RuleAction::Drop);
        cidr.destination = Destination::Cidrs(vec!["203.0.113.0/24".parse().unwrap()]);
        let mut disabled = rule("off", RuleAction::Accept);
        disabled.enabled = false;
        let mut dom = rule("ok-example", RuleAction::Accept);
        dom.destination = Destination::Domains(vec![DomainPattern::Wildcard("example.com".into())]);
        let fw = fw(vec![log, disabled, cidr, dom]);
        let p = CompiledPolicy::new(&fw);
        for f in [
            flow("203.0.113.9", 443, Fact::Known("a.example.com")),
            flow("198.51.100.1", 443, Fact::Known("a.example.com")),
            flow("198.51.100.1", 443, Fact::Pending),
            flow("198.51.100.1", 80, Fact::Known("example.org")),
        ] {
            assert_eq!(p.evaluate(&f), naive_evaluate(&fw, &f), "{f:?}");
        }
        let e = p.evaluate(&flow("198.51.100.1", 443, Fact::Known("a.example.com")));
        assert_eq!(e.monitors, vec![RuleId(0)]);
        assert_eq!(
            e.outcome,
            Outcome::Decided {
                rule: Some(RuleId(3)),
                action: Action::Accept,
                by: DecidedBy::Match
            }
        );
        let e = p.evaluate(&flow("198.51.100.1", 443, Fact::Pending));
        assert_eq!(
            e.outcome,
            Outcome::Pending {
                rule: RuleId(3),
                needs: Needs {
                    domain: true,
                    app: false
                }
            }
        );
        let e = p.evaluate(&flow("198.51.100.1", 80, Fact::Known("example.org")));
        assert_eq!(e.outcome, default_with(Action::Drop));
    }

    fn default_with(action: Action) -> Outcome {
        Outcome::Decided {
            rule: None,
            action,
            by: DecidedBy::Default,
        }
    }

    #[test]
    fn dns_mode_domains_lists_exact_names_of_dns_rules() {
        let mk = |mode, pats: &[&str], enabled| {
            let mut r = rule("d", RuleAction::Accept);
            r.domain_mode = mode;
            r.enabled = enabled;
            r.destination = Destination::Domains(
                pats.iter()
                    .map(|p| match p.strip_prefix("*.") {
                        Some(s) => DomainPattern::Wildcard(s.into()),
                        None => DomainPattern::Exact((*p).into()),
                    })
                    .collect(),
            );
            r
        };
        let fw = fw(vec![
            mk(DomainMode::Fqdn, &["fqdn.example"], true),
            mk(DomainMode::Dns, &["b.example", "*.w.example"], true),
            mk(DomainMode::FqdnOrDns, &["a.example", "b.example"], true),
            mk(DomainMode::FqdnAndDns, &["c.example"], true),
            mk(DomainMode::Dns, &["off.example"], false),
        ]);
        let names: Vec<String> = CompiledPolicy::new(&fw)
            .dns_mode_domains()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(names, ["a.example", "b.example", "c.example"]);
    }

    #[test]
    fn empty_policy_uses_default_action() {
        let fw = fw(vec![]);
        let p = CompiledPolicy::new(&fw);
        let f = flow("198.51.100.1", 1, Fact::Unidentifiable);
        assert_eq!(p.evaluate(&f), naive_evaluate(&fw, &f));
        assert_eq!(p.evaluate(&f).outcome, default_with(Action::Drop));
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CompiledPolicy>();
    }
}
