//! Shared helpers for natfw's benchmarks (synthetic policies and traffic).
//!
//! Everything is generated from a seed with a small xorshift generator, so that a benchmark
//! run is reproducible and needs no data files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use natfw_policy::eval::IpProto;
use natfw_policy::{
    Action, App, CountryCode, Destination, DomainMode, DomainPattern, Fact, Firewall, FlowFacts,
    Mode, Pos, Protocol, Rule, RuleAction,
};

/// xorshift64*: tiny, deterministic, good enough to spread synthetic data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `pct`/100.
    pub fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

const COUNTRIES: [&str; 24] = [
    "CN", "RU", "DE", "US", "FR", "BR", "IN", "JP", "GB", "NL", "SE", "IT", "ES", "PL", "KR", "SG",
    "AU", "CA", "MX", "ZA", "NG", "EG", "TR", "AR",
];
const TLDS: [&str; 4] = ["com", "net", "org", "io"];

/// The `i`-th synthetic service name, e.g. `svc123.zone7.com` (3 labels).
pub fn service_name(i: u64) -> String {
    format!("svc{i}.zone{}.{}", i % 97, TLDS[(i % 4) as usize])
}

/// `n` domain patterns, about 70 % exact names and 30 % `*.` wildcards.
pub fn synthetic_patterns(n: usize, seed: u64) -> Vec<DomainPattern> {
    let mut rng = Rng::new(seed);
    (0..n as u64)
        .map(|i| {
            if rng.pct(70) {
                DomainPattern::Exact(service_name(i))
            } else {
                DomainPattern::Wildcard(service_name(i))
            }
        })
        .collect()
}

fn public_v4(rng: &mut Rng) -> Ipv4Addr {
    // 1.0.0.0 - 126.255.255.255: public unicast, far from the lab and private ranges.
    Ipv4Addr::from(0x0100_0000 + rng.below(0x7e00_0000) as u32)
}

fn public_v6(rng: &mut Rng) -> Ipv6Addr {
    Ipv6Addr::from(0x2400_u128 << 112 | u128::from(rng.next_u64()) << 48)
}

/// A firewall of `n` enabled rules shaped like a large real allow-list: ~55 % destination
/// CIDRs (v4 and v6, /16 to /28), ~35 % domains (all modes), ~3 % countries, ~7 % port-only
/// rules for one source subnet; some with sources, ports or applications; mostly `accept`,
/// some `drop`, a few `log`. Loose mode, default drop.
pub fn synthetic_firewall(n: usize, seed: u64) -> Firewall {
    let mut rng = Rng::new(seed);
    let rules = (0..n as u64)
        .map(|i| {
            let kind = rng.below(100);
            let destination = if kind < 55 {
                let net = if rng.pct(80) {
                    let len = 16 + rng.below(13) as u8;
                    ipnet::IpNet::new(public_v4(&mut rng).into(), len)
                } else {
                    let len = 32 + rng.below(33) as u8;
                    ipnet::IpNet::new(public_v6(&mut rng).into(), len)
                };
                Destination::Cidrs(vec![net.expect("valid prefix length").trunc()])
            } else if kind < 90 {
                let name = service_name(rng.below(n as u64 * 4));
                Destination::Domains(vec![if rng.pct(70) {
                    DomainPattern::Exact(name)
                } else {
                    DomainPattern::Wildcard(name)
                }])
            } else if kind < 93 {
                let c = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
                Destination::Location(vec![CountryCode::new(c).expect("two letters")])
            } else {
                Destination::Any
            };
            let protocol = match rng.below(4) {
                0 => Protocol::Any,
                1 | 2 => Protocol::Tcp,
                _ => Protocol::Udp,
            };
            let ports = if kind >= 93 || rng.pct(40) {
                let p =
                    [22u16, 25, 53, 80, 443, 993, 3306, 5432, 6379, 8080][rng.below(10) as usize];
                Some(if rng.pct(80) {
                    vec![p..=p]
                } else {
                    vec![p..=p.saturating_add(rng.below(2000) as u16)]
                })
            } else {
                None
            };
            let source = (kind >= 93 || rng.pct(20)).then(|| {
                let a = Ipv4Addr::new(10, rng.below(256) as u8, 0, 0);
                vec![ipnet::IpNet::new(a.into(), 16).expect("valid prefix length")]
            });
            let applications = rng
                .pct(10)
                .then(|| vec![[App::Https, App::Http, App::Ssh, App::Dns][rng.below(4) as usize]]);
            let action = match rng.below(20) {
                0 => RuleAction::Log,
                1..=4 => RuleAction::Drop,
                _ => RuleAction::Accept,
            };
            let domain_mode = [
                DomainMode::Fqdn,
                DomainMode::Fqdn,
                DomainMode::Dns,
                DomainMode::FqdnOrDns,
                DomainMode::FqdnAndDns,
            ][rng.below(5) as usize];
            Rule {
                name: format!("rule-{i}"),
                description: String::new(),
                source,
                destination,
                domain_mode,
                protocol,
                ports,
                applications,
                action,
                enabled: true,
                pos: Pos::default(),
            }
        })
        .collect();
    Firewall {
        enabled: true,
        mode: Mode::Loose,
        on_unidentifiable: natfw_policy::OnUnidentifiable::Accept,
        default_action: Action::Drop,
        rules,
    }
}

/// Owned facts of one synthetic new flow; [`SyntheticFlow::facts`] borrows them.
#[derive(Debug, Clone)]
pub struct SyntheticFlow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: IpProto,
    pub dst_port: Option<u16>,
    pub country: Option<CountryCode>,
    pub domain: Option<String>,
    pub dns_names: Vec<String>,
}

impl SyntheticFlow {
    /// The DNS names as the borrowed slice [`SyntheticFlow::facts`] wants (build it once,
    /// outside a measured loop).
    pub fn dns_refs(&self) -> Vec<&str> {
        self.dns_names.iter().map(String::as_str).collect()
    }

    /// The flow as the policy sees it when its first packet arrives: the name (if any) is
    /// known, the application still pending.
    pub fn facts<'a>(&'a self, dns_names: &'a [&'a str]) -> FlowFacts<'a> {
        FlowFacts {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            dst_port: self.dst_port,
            country: self.country,
            domain: match &self.domain {
                Some(n) => Fact::Known(n.as_str()),
                None => Fact::Unidentifiable,
            },
            app: Fact::Pending,
            dns_names,
            resolution: natfw_policy::Resolution::Final,
        }
    }
}

/// `count` flows aimed at `fw`: about half target a random rule's destination (inside its
/// prefix, one of its names or countries), the rest are random public destinations.
pub fn synthetic_flows(fw: &Firewall, count: usize, seed: u64) -> Vec<SyntheticFlow> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let mut dst: IpAddr = public_v4(&mut rng).into();
            let mut domain = rng
                .pct(60)
                .then(|| service_name(rng.next_u64() % 1_000_000));
            let mut country =
                CountryCode::new(COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize]);
            if !fw.rules.is_empty() && rng.pct(50) {
                let r = &fw.rules[rng.below(fw.rules.len() as u64) as usize];
                match &r.destination {
                    Destination::Cidrs(nets) => {
                        let n = nets[0];
                        dst = match n {
                            ipnet::IpNet::V4(n) => {
                                let span = u32::from(n.broadcast()) - u32::from(n.network());
                                Ipv4Addr::from(
                                    u32::from(n.network()) + rng.below(u64::from(span) + 1) as u32,
                                )
                                .into()
                            }
                            ipnet::IpNet::V6(n) => n.network().into(),
                        };
                    }
                    Destination::Domains(p) => {
                        domain = Some(match &p[0] {
                            DomainPattern::Exact(e) => e.clone(),
                            DomainPattern::Wildcard(s) => format!("www.{s}"),
                        });
                    }
                    Destination::Location(c) => country = Some(c[0]),
                    Destination::Any => {}
                }
            }
            let dns_names = domain.iter().filter(|_| rng.pct(50)).cloned().collect();
            SyntheticFlow {
                src: Ipv4Addr::new(10, rng.below(256) as u8, rng.below(256) as u8, 7).into(),
                dst,
                proto: if rng.pct(85) {
                    IpProto::Tcp
                } else {
                    IpProto::Udp
                },
                dst_port: Some([443u16, 80, 53, 22, 8080, 3306][rng.below(6) as usize]),
                country,
                domain,
                dns_names,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_hit_rules() {
        let fw = synthetic_firewall(1000, 1);
        let flows = synthetic_flows(&fw, 500, 2);
        let matched = flows
            .iter()
            .filter(|fl| {
                let dns = fl.dns_refs();
                let f = fl.facts(&dns);
                matches!(
                    natfw_policy::naive_evaluate(&fw, &f).outcome,
                    natfw_policy::Outcome::Decided { rule: Some(_), .. }
                )
            })
            .count();
        assert!(matched > 100 && matched < 500, "matched {matched} of 500");
    }
}
