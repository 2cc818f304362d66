//! The compiled policy gives exactly the reference answer (`naive_evaluate`): outcome and
//! monitors, for random firewalls and random flows drawn close to the rules so that they hit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use ipnet::IpNet;
use natfw_policy::compile::CompiledPolicy;
use natfw_policy::eval::IpProto;
use natfw_policy::{
    naive_evaluate, Action, App, CountryCode, Destination, DomainMode, DomainPattern, Fact,
    Firewall, FlowFacts, Mode, Pos, Protocol, Resolution, Rule, RuleAction,
};
use proptest::prelude::*;

/// Addresses from a small space so that prefixes nest, overlap and contain the flows'.
fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..3, 0u8..3, 0u8..4).prop_map(|(a, b, c)| IpAddr::V4(Ipv4Addr::new(10, a, b * 64, c))),
        (0u8..4).prop_map(|c| IpAddr::V4(Ipv4Addr::new(203, 0, 113, c * 60))),
        (0u16..3, 0u16..3, 0u16..3).prop_map(|(a, b, c)| {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, a, b << 12, 0, 0, 0, c))
        }),
    ]
}

fn net() -> impl Strategy<Value = IpNet> {
    (addr(), 0usize..10).prop_map(|(a, l)| {
        let len = match a {
            IpAddr::V4(_) => [0u8, 8, 14, 16, 18, 24, 26, 30, 32, 32][l],
            IpAddr::V6(_) => [0u8, 16, 32, 46, 48, 52, 64, 100, 126, 128][l],
        };
        IpNet::new(a, len).expect("valid length").trunc()
    })
}

const PORTS: [u16; 10] = [0, 1, 22, 53, 80, 443, 444, 1024, 8080, 65535];

fn port() -> impl Strategy<Value = u16> {
    prop::sample::select(PORTS.to_vec())
}

fn port_range() -> impl Strategy<Value = RangeInclusive<u16>> {
    (port(), port()).prop_map(|(a, b)| a.min(b)..=a.max(b))
}

/// Names over a tiny alphabet so that exact and wildcard patterns collide.
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4).prop_map(|l| l.join("."))
}

fn pattern() -> impl Strategy<Value = DomainPattern> {
    (name(), any::<bool>()).prop_map(|(n, w)| {
        if w {
            DomainPattern::Wildcard(n)
        } else {
            DomainPattern::Exact(n)
        }
    })
}

fn country() -> impl Strategy<Value = CountryCode> {
    prop::sample::select(vec!["DE", "US", "CN", "FR"]).prop_map(|c| CountryCode::new(c).unwrap())
}

fn app() -> impl Strategy<Value = App> {
    prop::sample::select(vec![App::Http, App::Https, App::Dns, App::Ssh])
}

fn destination() -> impl Strategy<Value = Destination> {
    prop_oneof![
        1 => Just(Destination::Any),
        2 => prop::collection::vec(net(), 1..4).prop_map(Destination::Cidrs),
        3 => prop::collection::vec(pattern(), 1..4).prop_map(Destination::Domains),
        1 => prop::collection::vec(country(), 1..3).prop_map(Destination::Location),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop::option::weighted(0.3, prop::collection::vec(net(), 1..3)),
        destination(),
        prop::sample::select(vec![
            DomainMode::Fqdn,
            DomainMode::Dns,
            DomainMode::FqdnOrDns,
            DomainMode::FqdnAndDns,
        ]),
        prop::sample::select(vec![
            Protocol::Any,
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Icmp,
        ]),
        prop::option::weighted(0.4, prop::collection::vec(port_range(), 1..3)),
        prop::option::weighted(0.25, prop::collection::vec(app(), 1..3)),
        prop::sample::select(vec![RuleAction::Accept, RuleAction::Drop, RuleAction::Log]),
        prop::bool::weighted(0.85),
    )
        .prop_map(
            |(source, destination, domain_mode, protocol, ports, applications, action, enabled)| {
                Rule {
                    name: String::from("r"),
                    description: String::new(),
                    source,
                    destination,
                    domain_mode,
                    protocol,
                    ports,
                    applications,
                    action,
                    enabled,
                    pos: Pos::default(),
                }
            },
        )
}

fn firewall() -> impl Strategy<Value = Firewall> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(rule(), 0..40),
    )
        .prop_map(|(enabled, strict, drop, rules)| Firewall {
            enabled,
            mode: if strict { Mode::Strict } else { Mode::Loose },
            on_unidentifiable: natfw_policy::OnUnidentifiable::Accept,
            default_action: if drop { Action::Drop } else { Action::Accept },
            rules,
        })
}

fn fact<T: std::fmt::Debug + Clone>(v: impl Strategy<Value = T>) -> impl Strategy<Value = Fact<T>> {
    prop_oneof![
        1 => Just(Fact::Pending),
        3 => v.prop_map(Fact::Known),
        1 => Just(Fact::Unidentifiable),
    ]
}

/// Owned flow facts; `dns_includes_domain` adds the sent name to the DNS names (so that
/// `fqdn_and_dns` rules can hold).
#[derive(Debug, Clone)]
struct Flow {
    src: IpAddr,
    dst: IpAddr,
    proto: IpProto,
    dst_port: Option<u16>,
    country: Option<CountryCode>,
    domain: Fact<String>,
    app: Fact<App>,
    dns_names: Vec<String>,
    dns_includes_domain: bool,
    resolution: Resolution,
}

fn flow() -> impl Strategy<Value = Flow> {
    (
        addr(),
        addr(),
        prop::sample::select(vec![
            IpProto::Tcp,
            IpProto::Udp,
            IpProto::Icmp,
            IpProto::Other(47),
        ]),
        prop::option::weighted(0.9, port()),
        prop::option::weighted(0.8, country()),
        fact(name()),
        fact(app()),
        prop::collection::vec(name(), 0..3),
        any::<bool>(),
        prop::sample::select(vec![
            Resolution::Final,
            Resolution::Pending,
            Resolution::Failed,
        ]),
    )
        .prop_map(
            |(
                src,
                dst,
                proto,
                dst_port,
                country,
                domain,
                app,
                dns_names,
                dns_includes_domain,
                resolution,
            )| {
                Flow {
                    src,
                    dst,
                    proto,
                    dst_port,
                    country,
                    domain,
                    app,
                    dns_names,
                    dns_includes_domain,
                    resolution,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn compiled_equals_naive(fw in firewall(), flows in prop::collection::vec(flow(), 1..12)) {
        let compiled = CompiledPolicy::new(&fw);
        for fl in &flows {
            let mut dns: Vec<&str> = fl.dns_names.iter().map(String::as_str).collect();
            let domain = match &fl.domain {
                Fact::Known(n) => {
                    if fl.dns_includes_domain {
                        dns.push(n);
                    }
                    Fact::Known(n.as_str())
                }
                Fact::Pending => Fact::Pending,
                Fact::Unidentifiable => Fact::Unidentifiable,
            };
            let f = FlowFacts {
                src: fl.src,
                dst: fl.dst,
                proto: fl.proto,
                dst_port: fl.dst_port,
                country: fl.country,
                domain,
                app: fl.app,
                dns_names: &dns,
                resolution: fl.resolution,
            };
            prop_assert_eq!(compiled.evaluate(&f), naive_evaluate(&fw, &f), "flow {:?}", fl);
        }
    }
}

/// The generators above must produce every kind of outcome, otherwise the property above
/// would be comparing defaults with defaults.
#[test]
fn generators_reach_every_outcome_kind() {
    use natfw_policy::{DecidedBy, Outcome};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let (mut matched, mut pending, mut strict, mut default, mut monitored) = (0, 0, 0, 0, 0);
    for _ in 0..300 {
        let fw = firewall().new_tree(&mut runner).unwrap().current();
        let compiled = CompiledPolicy::new(&fw);
        for _ in 0..10 {
            let fl = flow().new_tree(&mut runner).unwrap().current();
            let dns: Vec<&str> = fl.dns_names.iter().map(String::as_str).collect();
            let f = FlowFacts {
                src: fl.src,
                dst: fl.dst,
                proto: fl.proto,
                dst_port: fl.dst_port,
                country: fl.country,
                domain: match &fl.domain {
                    Fact::Known(n) => Fact::Known(n.as_str()),
                    Fact::Pending => Fact::Pending,
                    Fact::Unidentifiable => Fact::Unidentifiable,
                },
                app: fl.app,
                dns_names: &dns,
                resolution: fl.resolution,
            };
            let e = compiled.evaluate(&f);
            monitored += usize::from(!e.monitors.is_empty());
            match e.outcome {
                Outcome::Decided {
                    by: DecidedBy::Match,
                    ..
                } => matched += 1,
                Outcome::Decided {
                    by: DecidedBy::UnknownStrict,
                    ..
                } => strict += 1,
                Outcome::Decided {
                    by: DecidedBy::Default,
                    ..
                } => default += 1,
                Outcome::Pending { .. } => pending += 1,
            }
        }
    }
    for (what, n) in [
        ("matched", matched),
        ("pending", pending),
        ("strict", strict),
        ("default", default),
        ("monitored", monitored),
    ] {
        assert!(n >= 30, "{what}: only {n} of 3000");
    }
}
