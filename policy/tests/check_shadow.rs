//! The shadowed-rule check is sound: whenever `config::covers(a, b)` says rule `a` covers rule
//! `b`, no flow makes `b` true without making `a` true, and none makes `b` unknown while `a` is
//! false (with every fact settled: known or unidentifiable). Checked against the reference
//! rule semantics in `eval`.

use natfw_policy::config::covers;
use natfw_policy::eval::{rule_tri, IpProto, Tri};
use natfw_policy::{
    App, CountryCode, Destination, DomainMode, DomainPattern, Fact, FlowFacts, Pos, Protocol, Rule,
    RuleAction,
};
use proptest::prelude::*;
use proptest::sample::subsequence;

const NETS: [&str; 6] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "192.168.0.0/16",
    "fd00::/8",
    "0.0.0.0/0",
];
const SRC: [&str; 5] = [
    "10.1.2.3",
    "10.9.0.1",
    "192.168.1.1",
    "fd00::1",
    "172.16.0.1",
];
const NAMES: [&str; 4] = ["a.com", "x.a.com", "y.b.a.com", "b.a.com"];
const APPS: [App; 4] = [App::Http, App::Https, App::Dns, App::Quic];
const COUNTRIES: [&str; 3] = ["DE", "FR", "US"];

fn patterns() -> Vec<DomainPattern> {
    vec![
        DomainPattern::Exact("a.com".into()),
        DomainPattern::Exact("x.a.com".into()),
        DomainPattern::Wildcard("a.com".into()),
        DomainPattern::Wildcard("b.a.com".into()),
    ]
}

fn nets() -> impl Strategy<Value = Vec<ipnet::IpNet>> {
    subsequence(NETS.to_vec(), 1..=3).prop_map(|v| v.iter().map(|s| s.parse().unwrap()).collect())
}

fn rule() -> impl Strategy<Value = Rule> {
    let source = prop::option::of(nets());
    let protocol = prop_oneof![
        Just(Protocol::Any),
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Icmp)
    ];
    // 101 is a one-port gap between 1-100 and 102-443 that 90-110 crosses.
    let ranges = vec![1..=100u16, 50..=60, 80..=80, 102..=443, 443..=443, 90..=110];
    let ports = prop::option::of(subsequence(ranges, 1..=3));
    let apps = prop::option::of(subsequence(APPS.to_vec(), 1..=3));
    let destination = prop_oneof![
        Just(Destination::Any),
        nets().prop_map(Destination::Cidrs),
        subsequence(patterns(), 1..=3).prop_map(Destination::Domains),
        subsequence(COUNTRIES.to_vec(), 1..=2).prop_map(|v| {
            Destination::Location(v.iter().map(|c| CountryCode::new(c).unwrap()).collect())
        }),
    ];
    let mode = prop_oneof![
        Just(DomainMode::Fqdn),
        Just(DomainMode::Dns),
        Just(DomainMode::FqdnOrDns),
        Just(DomainMode::FqdnAndDns)
    ];
    (source, protocol, ports, apps, destination, mode).prop_map(
        |(source, protocol, ports, applications, destination, domain_mode)| Rule {
            name: "r".into(),
            description: String::new(),
            source,
            destination,
            domain_mode,
            protocol,
            ports,
            applications,
            action: RuleAction::Accept,
            enabled: true,
            pos: Pos::default(),
        },
    )
}

#[derive(Debug, Clone)]
struct Flow {
    src: &'static str,
    dst: &'static str,
    proto: IpProto,
    port: Option<u16>,
    country: Option<&'static str>,
    domain: Option<&'static str>,
    app: Option<App>,
    dns: Vec<&'static str>,
}

fn flow() -> impl Strategy<Value = Flow> {
    (
        prop::sample::select(SRC.to_vec()),
        prop::sample::select(SRC.to_vec()),
        prop_oneof![Just(IpProto::Tcp), Just(IpProto::Udp), Just(IpProto::Icmp)],
        prop::option::of(prop_oneof![Just(55u16), Just(80), Just(443), Just(8080)]),
        prop::option::of(prop::sample::select(COUNTRIES.to_vec())),
        prop::option::of(prop::sample::select(NAMES.to_vec())),
        prop::option::of(prop::sample::select(APPS.to_vec())),
        subsequence(NAMES.to_vec(), 0..=2),
    )
        .prop_map(|(src, dst, proto, port, country, domain, app, dns)| Flow {
            src,
            dst,
            proto,
            port: if proto == IpProto::Icmp { None } else { port },
            country,
            domain,
            app,
            dns,
        })
}

/// Flows that satisfy as many of `b`'s conditions as the small value sets allow, so that `b`
/// is usually true and the property has something to check.
fn witness(b: &Rule) -> impl Strategy<Value = Flow> {
    fn pick<T: Clone + std::fmt::Debug + 'static>(all: &[T], keep: impl Fn(&T) -> bool) -> Vec<T> {
        let v: Vec<T> = all.iter().filter(|x| keep(x)).cloned().collect();
        if v.is_empty() {
            all.to_vec()
        } else {
            v
        }
    }
    let in_nets = |nets: &Option<Vec<ipnet::IpNet>>, ip: &&str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        nets.as_ref()
            .is_none_or(|n| n.iter().any(|n| n.contains(&ip)))
    };
    let srcs = pick(&SRC, |ip| in_nets(&b.source, ip));
    let dst_nets = match &b.destination {
        Destination::Cidrs(n) => Some(n.clone()),
        _ => None,
    };
    let dsts = pick(&SRC, |ip| in_nets(&dst_nets, ip));
    let protos = match b.protocol {
        Protocol::Tcp => vec![IpProto::Tcp],
        Protocol::Udp => vec![IpProto::Udp],
        Protocol::Icmp => vec![IpProto::Icmp],
        Protocol::Any => vec![IpProto::Tcp, IpProto::Udp, IpProto::Icmp],
    };
    let ports: Vec<u16> = match &b.ports {
        // Both ends, and every port of short ranges (to hit one-port gaps).
        Some(r) => r
            .iter()
            .flat_map(|r| {
                if r.end() - r.start() <= 32 {
                    r.clone().collect()
                } else {
                    vec![*r.start(), *r.end()]
                }
            })
            .collect(),
        None => vec![55, 80, 443, 8080],
    };
    let names = match &b.destination {
        Destination::Domains(p) => pick(&NAMES, |n| p.iter().any(|p| p.matches(n))),
        _ => NAMES.to_vec(),
    };
    let apps = b.applications.clone().unwrap_or(APPS.to_vec());
    let countries = match &b.destination {
        Destination::Location(c) => pick(&COUNTRIES, |x| c.iter().any(|c| c.as_str() == *x)),
        _ => COUNTRIES.to_vec(),
    };
    (
        prop::sample::select(srcs),
        prop::sample::select(dsts),
        prop::sample::select(protos),
        prop::sample::select(ports),
        prop::option::weighted(0.9, prop::sample::select(countries)),
        prop::option::weighted(0.9, prop::sample::select(names.clone())),
        prop::option::weighted(0.9, prop::sample::select(apps)),
        subsequence(names.clone(), 0..=names.len().min(2)),
    )
        .prop_map(|(src, dst, proto, port, country, domain, app, dns)| Flow {
            src,
            dst,
            proto,
            port: (proto != IpProto::Icmp).then_some(port),
            country,
            domain,
            app,
            dns,
        })
}

/// A pair of rules where the second takes each condition from the first or from another
/// random rule: covering pairs are then common enough to test.
fn pair() -> impl Strategy<Value = (Rule, Rule)> {
    (
        rule(),
        rule(),
        prop::array::uniform6(prop::bool::weighted(0.7)),
    )
        .prop_map(|(a, other, keep)| {
            let mut b = a.clone();
            if !keep[0] {
                b.source = other.source;
            }
            if !keep[1] {
                b.protocol = other.protocol;
            }
            if !keep[2] {
                b.ports = other.ports;
            }
            if !keep[3] {
                b.applications = other.applications;
            }
            if !keep[4] {
                b.destination = other.destination;
            }
            if !keep[5] {
                b.domain_mode = other.domain_mode;
            }
            (a, b)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        max_global_rejects: 1 << 20,
        ..ProptestConfig::default()
    })]

    #[test]
    fn covering_rule_is_at_least_as_true(
        (a, b, flows) in pair().prop_flat_map(|(a, b)| {
            let flows = (
                prop::collection::vec(witness(&b), 16),
                prop::collection::vec(flow(), 8),
            )
                .prop_map(|(mut w, r)| {
                    w.extend(r);
                    w
                });
            (Just(a), Just(b), flows)
        })
    ) {
        prop_assume!(covers(&a, &b));
        for f in flows {
        let facts = FlowFacts {
            src: f.src.parse().unwrap(),
            dst: f.dst.parse().unwrap(),
            proto: f.proto,
            dst_port: f.port,
            country: f.country.and_then(CountryCode::new),
            domain: f.domain.map_or(Fact::Unidentifiable, Fact::Known),
            app: f.app.map_or(Fact::Unidentifiable, Fact::Known),
            dns_names: &f.dns,
            resolution: natfw_policy::Resolution::Final,
        };
        let (ta, tb) = (rule_tri(&a, &facts), rule_tri(&b, &facts));
        match tb {
            Tri::True => prop_assert_eq!(ta, Tri::True, "{:?}\n{:?}", a, b),
            Tri::Unknown => prop_assert!(ta != Tri::False, "{:?}\n{:?}", a, b),
            Tri::False => {}
            Tri::Pending(_) => prop_assert!(false, "settled facts cannot be pending"),
        }
        }
    }

    #[test]
    fn a_rule_covers_itself(a in rule()) {
        prop_assert!(covers(&a, &a));
    }
}
