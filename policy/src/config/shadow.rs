//! Shadowed-rule detection: a rule that can never decide or be recorded because an earlier
//! enabled `accept`/`drop` rule matches every flow it matches.
//!
//! Conservative: only reports when coverage is certain from the conditions alone. Rule `a`
//! (earlier) covers rule `b` when every condition of `a` is a superset of `b`'s: source,
//! protocol, ports, destination (same kind; domains also need the same domain mode, since the
//! modes see different facts), applications. Then whenever `b` is true, pending or unknown,
//! `a` is at least as true and decides first (see `eval`'s four-valued walk).

use std::ops::RangeInclusive;

use ipnet::IpNet;

use crate::model::{Destination, DomainPattern, Pos, Protocol, Rule, RuleAction};

/// `(position of the shadowed rule, message)` for every shadowed enabled rule.
pub(super) fn shadowed(rules: &[Rule]) -> Vec<(Pos, String)> {
    let mut out = Vec::new();
    for (j, b) in rules.iter().enumerate() {
        if !b.enabled {
            continue;
        }
        let cover = rules[..j]
            .iter()
            .find(|a| a.enabled && a.action != RuleAction::Log && covers(a, b));
        if let Some(a) = cover {
            out.push((
                b.pos,
                format!(
                    "rule `{}` can never match: rule `{}` (line {}) above it matches every flow \
                     it matches and {}s first",
                    b.name,
                    a.name,
                    a.pos.line,
                    if a.action == RuleAction::Accept {
                        "accept"
                    } else {
                        "drop"
                    }
                ),
            ));
        }
    }
    out
}

/// Does rule `a` match (at least) every flow rule `b` matches? Conservative: `false` when unsure.
/// Used for the shadowed-rule warning; `enabled` and `action` are not looked at.
pub fn covers(a: &Rule, b: &Rule) -> bool {
    let source = match (&a.source, &b.source) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(an), Some(bn)) => nets_cover(an, bn),
    };
    let protocol = a.protocol == Protocol::Any || a.protocol == b.protocol;
    let ports = match (&a.ports, &b.ports) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ar), Some(br)) => ports_cover(ar, br),
    };
    let apps = match (&a.applications, &b.applications) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(aa), Some(ba)) => ba.iter().all(|x| aa.contains(x)),
    };
    let dest = match (&a.destination, &b.destination) {
        (Destination::Any, _) => true,
        (Destination::Cidrs(an), Destination::Cidrs(bn)) => nets_cover(an, bn),
        (Destination::Location(ac), Destination::Location(bc)) => bc.iter().all(|c| ac.contains(c)),
        (Destination::Domains(ap), Destination::Domains(bp)) => {
            a.domain_mode == b.domain_mode
                && bp.iter().all(|p| ap.iter().any(|q| pattern_covers(q, p)))
        }
        _ => false,
    };
    source && protocol && ports && apps && dest
}

fn nets_cover(a: &[IpNet], b: &[IpNet]) -> bool {
    b.iter().all(|n| a.iter().any(|m| m.contains(n)))
}

/// Every range of `b` inside the union of `a`'s ranges.
fn ports_cover(a: &[RangeInclusive<u16>], b: &[RangeInclusive<u16>]) -> bool {
    let mut merged: Vec<(u32, u32)> = a
        .iter()
        .map(|r| (*r.start() as u32, *r.end() as u32))
        .collect();
    merged.sort_unstable();
    let mut union: Vec<(u32, u32)> = Vec::with_capacity(merged.len());
    for (s, e) in merged {
        match union.last_mut() {
            Some(last) if s <= last.1 + 1 => last.1 = last.1.max(e),
            _ => union.push((s, e)),
        }
    }
    b.iter().all(|r| {
        union
            .iter()
            .any(|&(s, e)| s <= *r.start() as u32 && *r.end() as u32 <= e)
    })
}

/// Does pattern `a` match every name pattern `b` matches?
pub(crate) fn pattern_covers(a: &DomainPattern, b: &DomainPattern) -> bool {
    match (a, b) {
        (DomainPattern::Exact(x), DomainPattern::Exact(y)) => x == y,
        (DomainPattern::Wildcard(_), DomainPattern::Exact(y)) => a.matches(y),
        (DomainPattern::Wildcard(x), DomainPattern::Wildcard(y)) => x == y || a.matches(y),
        (DomainPattern::Exact(_), DomainPattern::Wildcard(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DomainMode;

    fn rule(name: &str) -> Rule {
        Rule {
            name: name.into(),
            description: String::new(),
            source: None,
            destination: Destination::Any,
            domain_mode: DomainMode::Fqdn,
            protocol: Protocol::Any,
            ports: None,
            applications: None,
            action: RuleAction::Accept,
            enabled: true,
            pos: Pos::default(),
        }
    }

    fn w(s: &str) -> DomainPattern {
        DomainPattern::Wildcard(s.into())
    }
    fn e(s: &str) -> DomainPattern {
        DomainPattern::Exact(s.into())
    }

    #[test]
    fn pattern_coverage() {
        assert!(pattern_covers(&w("a.com"), &e("x.a.com")));
        assert!(pattern_covers(&w("a.com"), &w("b.a.com")));
        assert!(!pattern_covers(&w("a.com"), &e("a.com")));
        assert!(!pattern_covers(&e("x.a.com"), &w("a.com")));
        assert!(!pattern_covers(&w("b.a.com"), &w("a.com")));
    }

    #[test]
    fn port_union_coverage() {
        assert!(ports_cover(&[1..=100, 101..=200], &[50..=150]));
        assert!(!ports_cover(&[1..=100, 102..=200], &[50..=150]));
        assert!(ports_cover(&[443..=443], &[443..=443]));
        assert!(ports_cover(&[0..=65535], &[65535..=65535]));
    }

    #[test]
    fn each_condition_must_cover() {
        let any = rule("any");
        let mut b = rule("b");
        b.protocol = Protocol::Tcp;
        b.ports = Some(vec![443..=443]);
        b.destination = Destination::Domains(vec![e("x.a.com")]);
        assert!(covers(&any, &b));
        let mut a = rule("a");
        a.protocol = Protocol::Udp;
        assert!(!covers(&a, &b));
        a.protocol = Protocol::Tcp;
        a.ports = Some(vec![80..=80]);
        assert!(!covers(&a, &b));
        a.ports = None;
        a.destination = Destination::Domains(vec![w("a.com")]);
        assert!(covers(&a, &b));
        a.domain_mode = DomainMode::Dns;
        assert!(
            !covers(&a, &b),
            "different domain modes see different facts"
        );
        a.domain_mode = DomainMode::Fqdn;
        a.source = Some(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(!covers(&a, &b), "any source is not covered by 10/8");
        b.source = Some(vec!["10.1.0.0/16".parse().unwrap()]);
        assert!(covers(&a, &b));
        a.applications = Some(vec![crate::App::Https]);
        assert!(!covers(&a, &b));
        b.applications = Some(vec![crate::App::Https]);
        assert!(covers(&a, &b));
        a.destination = Destination::Cidrs(vec!["0.0.0.0/0".parse().unwrap()]);
        assert!(!covers(&a, &b), "different destination kinds never cover");
    }

    #[test]
    fn only_enabled_deciding_rules_shadow() {
        let mut log = rule("log");
        log.action = RuleAction::Log;
        let later = rule("later");
        assert!(shadowed(&[log.clone(), later.clone()]).is_empty());
        let mut off = rule("off");
        off.enabled = false;
        assert!(shadowed(&[off, later.clone()]).is_empty());
        let found = shadowed(&[rule("first"), later]);
        assert_eq!(found.len(), 1);
        assert!(found[0]
            .1
            .contains("rule `later` can never match: rule `first`"));
    }
}
