//! The lab topologies as plain data: namespaces, veth links, addresses, routes, gateways.
//!
//! Everything here is pure (no I/O) so the plans can be checked without root. Names: every
//! namespace is `natfw-<tag>-<role>`, so `down` finds what a crashed run left behind by prefix.
//! Interface names only have to be unique inside their namespace, so they are short and fixed
//! (`inside0`/`outside0` on gateways, `eth0` on hosts), and veth pairs are created directly inside
//! their namespaces: labs with different tags never collide, even in parallel.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Prefix shared by every namespace the lab creates.
pub const NS_PREFIX: &str = "natfw-";

/// The internet side's router address on the shared "internet" segment (198.51.100.0/24).
pub const INET_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
/// Prefix length of the internet segment the EIPs sit on.
pub const INET_PREFIX_LEN: u8 = 24;

/// One server name and the address the lab DNS answers for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebName {
    pub name: &'static str,
    pub addr: Ipv4Addr,
}

/// HTTP/HTTPS names served by nginx in the internet namespace, each on its own address so that
/// IP-based (and DNS-mode) rules can tell them apart.
pub const WEB_NAMES: [WebName; 4] = [
    WebName {
        name: "updates.vendor.test",
        addr: Ipv4Addr::new(203, 0, 113, 10),
    },
    WebName {
        name: "api.vendor.test",
        addr: Ipv4Addr::new(203, 0, 113, 11),
    },
    WebName {
        name: "pay.partner.test",
        addr: Ipv4Addr::new(203, 0, 113, 12),
    },
    WebName {
        name: "blocked.example.test",
        addr: Ipv4Addr::new(203, 0, 113, 13),
    },
];

/// The lab DNS server (dnsmasq, authoritative for the names above).
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
/// UDP echo service (`natfw lab udp-echo`), port [`ECHO_PORT`].
pub const ECHO_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// UDP echo port.
pub const ECHO_PORT: u16 = 7;
/// sshd with a host key generated at `lab up`, port [`SSH_PORT`].
pub const SSH_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 22);
/// sshd port (not 22: it is a lab service, not a login).
pub const SSH_PORT: u16 = 2222;
/// iperf3 server.
pub const IPERF_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
/// iperf3 port.
pub const IPERF_PORT: u16 = 5201;
/// Name the blocked-domain checks use.
pub const BLOCKED_NAME: &str = "blocked.example.test";

/// Which of the three lab scenarios (issue "In the path").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// (1) prod and test VPCs, each behind its own gateway with its own EIP.
    ProdTest,
    /// (2) a DMZ gateway shared by several business VPCs reached through a transit router.
    SharedDmz,
    /// (3) one VPC with several vSwitches, each SNATed to its own EIP, plus a bypassed
    /// management host.
    VSwitches,
}

impl Scenario {
    /// All scenarios, in number order.
    pub const ALL: [Scenario; 3] = [Scenario::ProdTest, Scenario::SharedDmz, Scenario::VSwitches];

    /// From the number used on the command line (1, 2, 3).
    pub fn from_number(n: u8) -> Option<Scenario> {
        match n {
            1 => Some(Scenario::ProdTest),
            2 => Some(Scenario::SharedDmz),
            3 => Some(Scenario::VSwitches),
            _ => None,
        }
    }

    /// The command-line number.
    pub fn number(self) -> u8 {
        match self {
            Scenario::ProdTest => 1,
            Scenario::SharedDmz => 2,
            Scenario::VSwitches => 3,
        }
    }

    /// One-line description.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::ProdTest => "prod and test VPCs, one gateway and one EIP each",
            Scenario::SharedDmz => "DMZ gateway shared by business VPCs behind a transit router",
            Scenario::VSwitches => {
                "one VPC, three vSwitches with their own EIP, bypassed mgmt host"
            }
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenario {}", self.number())
    }
}

/// What a namespace is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Internet servers and the router of the internet segment.
    Internet,
    /// A NAT gateway (natfw or the kernel baseline runs here).
    Gateway,
    /// A plain router between VPC subnets and a gateway (transit / vSwitch router).
    Router,
    /// A VPC host (client).
    Host,
}

/// One network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsSpec {
    /// Full name, `natfw-<tag>-<role>`.
    pub name: String,
    pub role: Role,
    /// Static routes: (destination, next hop) — `None` destination = default route.
    pub routes: Vec<(Option<Ipv4Net>, Ipv4Addr)>,
}

/// One veth pair; each end created directly in its namespace with its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub a_ns: String,
    pub a_if: String,
    pub a_addr: Option<Ipv4Net>,
    pub b_ns: String,
    pub b_if: String,
    pub b_addr: Option<Ipv4Net>,
    /// Enslave the `b` end to the internet bridge `br0` instead of addressing it.
    pub b_bridged: bool,
}

/// One SNAT entry of a gateway (mirrors the natfw config's `snat` list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatSpec {
    pub name: String,
    pub source: Ipv4Net,
    pub eip: Ipv4Addr,
}

/// A gateway namespace and what it translates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    /// Short name (`prod`, `dmz`, `vpc`), also used for config and flow-log file names.
    pub name: String,
    pub ns: String,
    /// The gateway's own address on `outside0` (primary, not an EIP): the kernel's traffic
    /// (neighbour probes) and the SNAT of bypassed sources use it, since everything to an EIP
    /// belongs to natfw.
    pub own_addr: Ipv4Addr,
    pub eips: Vec<Ipv4Addr>,
    pub snat: Vec<SnatSpec>,
    /// Sources SNATed by the kernel, not inspected (natfw's bypass list).
    pub bypass: Vec<Ipv4Net>,
    /// The natfw config for this gateway, relative to the repository root.
    pub config: String,
}

impl GatewaySpec {
    /// The EIP a source is translated to, if any SNAT entry covers it.
    pub fn eip_for(&self, src: Ipv4Addr) -> Option<Ipv4Addr> {
        self.snat
            .iter()
            .filter(|s| s.source.contains(&src))
            .max_by_key(|s| s.source.prefix_len())
            .map(|s| s.eip)
    }
}

/// A VPC host (a client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Short name (`prod`, `vsw1`, `mgmt`).
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
    /// Index into [`Plan::gateways`] of the gateway its traffic leaves by.
    pub gateway: usize,
    /// On its gateway's bypass list.
    pub bypassed: bool,
}

/// A DNS resolver inside the VPC (the provider's private DNS): VPC hosts reach it without
/// crossing the gateway, so its answers never cross it either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcResolver {
    pub ns: String,
    pub addr: Ipv4Addr,
}

/// The in-VPC resolver's address (its own /24 behind the VPC router).
pub const VPC_RESOLVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 254, 53, 53);

/// A whole topology for one scenario and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub scenario: Scenario,
    pub tag: String,
    pub namespaces: Vec<NsSpec>,
    pub links: Vec<Link>,
    pub gateways: Vec<GatewaySpec>,
    pub hosts: Vec<HostSpec>,
    /// The variant with a resolver inside the VPC ([`Plan::with_vpc_resolver`]).
    pub vpc_resolver: Option<VpcResolver>,
}

fn net(a: Ipv4Addr, len: u8) -> Ipv4Net {
    // Every call below uses a literal prefix length <= 32.
    Ipv4Net::new(a, len).unwrap_or_else(|_| Ipv4Net::from(a))
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// Is `tag` usable in namespace names (lower-case letters, digits, at most 12 characters)?
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 12
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

struct Builder {
    tag: String,
    plan: Plan,
}

impl Builder {
    fn ns_name(&self, role: &str) -> String {
        format!("{NS_PREFIX}{}-{role}", self.tag)
    }

    fn ns(&mut self, role_name: &str, role: Role) -> String {
        let name = self.ns_name(role_name);
        self.plan.namespaces.push(NsSpec {
            name: name.clone(),
            role,
            routes: Vec::new(),
        });
        name
    }

    fn route(&mut self, ns: &str, dst: Option<Ipv4Net>, via: Ipv4Addr) {
        if let Some(n) = self.plan.namespaces.iter_mut().find(|n| n.name == ns) {
            n.routes.push((dst, via));
        }
    }

    fn link(&mut self, a: (&str, &str, Ipv4Net), b: (&str, &str, Ipv4Net)) {
        self.plan.links.push(Link {
            a_ns: a.0.into(),
            a_if: a.1.into(),
            a_addr: Some(a.2),
            b_ns: b.0.into(),
            b_if: b.1.into(),
            b_addr: Some(b.2),
            b_bridged: false,
        });
    }

    /// A gateway: its namespace, its outside link into the internet bridge, EIPs on `outside0`.
    fn gateway(
        &mut self,
        name: &str,
        own_addr: Ipv4Addr,
        eips: &[Ipv4Addr],
        snat: &[(&str, Ipv4Net, Ipv4Addr)],
        bypass: &[Ipv4Net],
        config: &str,
    ) -> (usize, String) {
        let ns = self.ns(&format!("gw{name}"), Role::Gateway);
        let inet = self.ns_name("inet");
        self.plan.links.push(Link {
            a_ns: ns.clone(),
            a_if: "outside0".into(),
            a_addr: Some(net(own_addr, INET_PREFIX_LEN)),
            b_ns: inet,
            b_if: format!("to-{name}"),
            b_addr: None,
            b_bridged: true,
        });
        self.route(&ns, None, INET_ROUTER);
        self.plan.gateways.push(GatewaySpec {
            name: name.into(),
            ns: ns.clone(),
            own_addr,
            eips: eips.to_vec(),
            snat: snat
                .iter()
                .map(|(n, s, e)| SnatSpec {
                    name: (*n).into(),
                    source: *s,
                    eip: *e,
                })
                .collect(),
            bypass: bypass.to_vec(),
            config: config.into(),
        });
        (self.plan.gateways.len() - 1, ns)
    }

    /// A host on its own /24 behind `peer_ns` (a gateway or router): `eth0` in the host,
    /// `peer_if` with `.1` on the peer side, default route to it.
    fn host(&mut self, name: &str, addr: Ipv4Addr, peer: (&str, &str), gw: usize, bypassed: bool) {
        let ns = self.ns(name, Role::Host);
        let o = addr.octets();
        let peer_addr = ip(o[0], o[1], o[2], 1);
        self.link(
            (&ns, "eth0", net(addr, 24)),
            (peer.0, peer.1, net(peer_addr, 24)),
        );
        self.route(&ns, None, peer_addr);
        self.plan.hosts.push(HostSpec {
            name: name.into(),
            ns,
            addr,
            gateway: gw,
            bypassed,
        });
    }
}

/// The topology of `scenario` with namespaces tagged `tag` (see [`valid_tag`]).
pub fn plan(scenario: Scenario, tag: &str) -> Plan {
    let mut b = Builder {
        tag: tag.into(),
        plan: Plan {
            scenario,
            tag: tag.into(),
            namespaces: Vec::new(),
            links: Vec::new(),
            gateways: Vec::new(),
            hosts: Vec::new(),
            vpc_resolver: None,
        },
    };
    b.ns("inet", Role::Internet);
    match scenario {
        Scenario::ProdTest => {
            let prod_eip = ip(198, 51, 100, 11);
            let test_eip = ip(198, 51, 100, 12);
            let (gp, gp_ns) = b.gateway(
                "prod",
                ip(198, 51, 100, 111),
                &[prod_eip],
                &[("prod-vpc", net(ip(10, 10, 0, 0), 16), prod_eip)],
                &[],
                "examples/lab/scenario-1-prod.yaml",
            );
            let (gt, gt_ns) = b.gateway(
                "test",
                ip(198, 51, 100, 112),
                &[test_eip],
                &[("test-vpc", net(ip(10, 20, 0, 0), 16), test_eip)],
                &[],
                "examples/lab/scenario-1-test.yaml",
            );
            b.host("prod", ip(10, 10, 1, 10), (&gp_ns, "inside0"), gp, false);
            b.host("test", ip(10, 20, 1, 10), (&gt_ns, "inside0"), gt, false);
        }
        Scenario::SharedDmz => {
            let eip_a = ip(198, 51, 100, 21);
            let eip_b = ip(198, 51, 100, 22);
            let vpcs = [
                ("vpca", ip(10, 1, 1, 10), eip_a),
                ("vpcb", ip(10, 2, 1, 10), eip_b),
                ("vpcc", ip(10, 3, 1, 10), eip_a),
            ];
            let snat: Vec<(&str, Ipv4Net, Ipv4Addr)> = vpcs
                .iter()
                .map(|(n, a, e)| (*n, net(ip(a.octets()[0], a.octets()[1], 0, 0), 16), *e))
                .collect();
            let (g, g_ns) = b.gateway(
                "dmz",
                ip(198, 51, 100, 120),
                &[eip_a, eip_b],
                &snat,
                &[],
                "examples/lab/scenario-2.yaml",
            );
            let tr = b.ns("transit", Role::Router);
            let gw_in = ip(10, 255, 0, 1);
            let tr_up = ip(10, 255, 0, 2);
            b.link(
                (&g_ns, "inside0", net(gw_in, 24)),
                (&tr, "up0", net(tr_up, 24)),
            );
            b.route(&tr, None, gw_in);
            for (i, (n, a, _)) in vpcs.iter().enumerate() {
                b.host(n, *a, (&tr, &format!("vpc{i}")), g, false);
                b.route(
                    &g_ns,
                    Some(net(ip(a.octets()[0], a.octets()[1], 0, 0), 16)),
                    tr_up,
                );
            }
        }
        Scenario::VSwitches => {
            let eips = [
                ip(198, 51, 100, 31),
                ip(198, 51, 100, 32),
                ip(198, 51, 100, 33),
            ];
            let mgmt = ip(10, 30, 9, 10);
            let (g, g_ns) = b.gateway(
                "vpc",
                ip(198, 51, 100, 130),
                &eips,
                &[
                    ("vsw1", net(ip(10, 30, 1, 0), 24), eips[0]),
                    ("vsw2", net(ip(10, 30, 2, 0), 24), eips[1]),
                    ("vsw3", net(ip(10, 30, 3, 0), 24), eips[2]),
                    ("mgmt", net(ip(10, 30, 9, 0), 24), eips[0]),
                ],
                &[net(mgmt, 32)],
                "examples/lab/scenario-3.yaml",
            );
            let vr = b.ns("vrouter", Role::Router);
            let gw_in = ip(10, 30, 0, 1);
            let vr_up = ip(10, 30, 0, 2);
            b.link(
                (&g_ns, "inside0", net(gw_in, 24)),
                (&vr, "up0", net(vr_up, 24)),
            );
            b.route(&vr, None, gw_in);
            b.route(&g_ns, Some(net(ip(10, 30, 0, 0), 16)), vr_up);
            for (i, host) in [(1u8, "vsw1"), (2, "vsw2"), (3, "vsw3")] {
                b.host(host, ip(10, 30, i, 10), (&vr, &format!("vsw{i}")), g, false);
            }
            b.host("mgmt", mgmt, (&vr, "mgmt0"), g, true);
        }
    }
    b.plan
}

impl Plan {
    /// The variant whose DNS resolver sits in the VPC: a `res` namespace behind the VPC's
    /// router (transit or vSwitch router) at [`VPC_RESOLVER_ADDR`], authoritative for the lab
    /// names. `None` for a scenario without a VPC router (scenario 1).
    pub fn with_vpc_resolver(mut self) -> Option<Plan> {
        let router = self
            .namespaces
            .iter()
            .find(|n| n.role == Role::Router)?
            .name
            .clone();
        let ns = format!("{NS_PREFIX}{}-res", self.tag);
        let o = VPC_RESOLVER_ADDR.octets();
        let peer = ip(o[0], o[1], o[2], 1);
        self.namespaces.push(NsSpec {
            name: ns.clone(),
            role: Role::Host,
            routes: vec![(None, peer)],
        });
        self.links.push(Link {
            a_ns: ns.clone(),
            a_if: "eth0".into(),
            a_addr: Some(net(VPC_RESOLVER_ADDR, 24)),
            b_ns: router,
            b_if: "res0".into(),
            b_addr: Some(net(peer, 24)),
            b_bridged: false,
        });
        self.vpc_resolver = Some(VpcResolver {
            ns,
            addr: VPC_RESOLVER_ADDR,
        });
        Some(self)
    }

    /// The internet namespace.
    pub fn inet_ns(&self) -> &str {
        &self.namespaces[0].name
    }

    /// A host by short name.
    pub fn host(&self, name: &str) -> Option<&HostSpec> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The gateway a host's traffic leaves by.
    pub fn gateway_of(&self, host: &HostSpec) -> &GatewaySpec {
        &self.gateways[host.gateway]
    }

    /// The EIP a host's flows should appear from on the internet.
    pub fn expected_eip(&self, host: &HostSpec) -> Option<Ipv4Addr> {
        self.gateway_of(host).eip_for(host.addr)
    }

    /// The source address the internet sees for a host: its EIP, or for a bypassed host the
    /// gateway's own address (the kernel SNATs it; EIPs belong to natfw).
    pub fn expected_source(&self, host: &HostSpec) -> Option<Ipv4Addr> {
        if host.bypassed {
            Some(self.gateway_of(host).own_addr)
        } else {
            self.expected_eip(host)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_prefixed_unique_and_fit_interface_limits() {
        for s in Scenario::ALL {
            let p = plan(s, "t12345678901");
            let mut seen = HashSet::new();
            for n in &p.namespaces {
                assert!(n.name.starts_with("natfw-t12345678901-"), "{}", n.name);
                assert!(seen.insert(n.name.clone()), "duplicate {}", n.name);
            }
            let mut ifs = HashSet::new();
            for l in &p.links {
                for (ns, ifn) in [(&l.a_ns, &l.a_if), (&l.b_ns, &l.b_if)] {
                    assert!(ifn.len() <= 15, "{ifn}");
                    assert!(seen.contains(ns), "link to unknown ns {ns}");
                    assert!(ifs.insert((ns.clone(), ifn.clone())), "dup {ns}/{ifn}");
                }
            }
        }
    }

    #[test]
    fn every_host_is_covered_by_an_snat_entry_with_an_eip_of_its_gateway() {
        for s in Scenario::ALL {
            let p = plan(s, "x");
            for h in &p.hosts {
                let g = p.gateway_of(h);
                let eip = p.expected_eip(h).expect("host not SNAT-bound");
                assert!(g.eips.contains(&eip));
                assert_eq!(h.bypassed, g.bypass.iter().any(|b| b.contains(&h.addr)));
            }
        }
    }

    #[test]
    fn gateway_own_addresses_are_distinct_and_not_eips() {
        let mut seen = HashSet::new();
        for s in Scenario::ALL {
            let p = plan(s, "x");
            for g in &p.gateways {
                assert!(!g.eips.contains(&g.own_addr), "{}", g.name);
                assert!(seen.insert(g.own_addr), "{}", g.own_addr);
            }
            for h in p.hosts.iter().filter(|h| h.bypassed) {
                assert_eq!(p.expected_source(h), Some(p.gateway_of(h).own_addr));
            }
        }
    }

    #[test]
    fn vswitches_map_to_distinct_eips() {
        let p = plan(Scenario::VSwitches, "x");
        let eips: HashSet<_> = ["vsw1", "vsw2", "vsw3"]
            .iter()
            .map(|n| p.expected_eip(p.host(n).unwrap()).unwrap())
            .collect();
        assert_eq!(eips.len(), 3);
    }

    #[test]
    fn vpc_resolver_sits_behind_the_vpc_router_not_the_gateway() {
        assert!(plan(Scenario::ProdTest, "x").with_vpc_resolver().is_none());
        for s in [Scenario::SharedDmz, Scenario::VSwitches] {
            let p = plan(s, "x").with_vpc_resolver().unwrap();
            let r = p.vpc_resolver.as_ref().unwrap();
            let l = p.links.iter().find(|l| l.a_ns == r.ns).unwrap();
            let peer = p.namespaces.iter().find(|n| n.name == l.b_ns).unwrap();
            assert_eq!(peer.role, Role::Router);
            assert!(p.gateways.iter().all(|g| g.ns != l.b_ns));
        }
    }

    #[test]
    fn tags() {
        assert!(valid_tag("s1"));
        assert!(!valid_tag(""));
        assert!(!valid_tag("Bad"));
        assert!(!valid_tag("a-b"));
        assert!(!valid_tag("abcdefghijklm"));
    }
}
