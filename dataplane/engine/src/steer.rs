//! Which packets natfw takes: the one packet classifier.
//!
//! The kernel programs (`ebpf/natfw.bpf.c`: tc `natfw_steer` in split mode, XDP `natfw_xdp` in
//! classic mode) make this decision for every frame that arrives on the inside or the outside
//! interface; [`SteeringRules::decide`] is the same
//! decision in Rust, read the same way (at most one VLAN tag, IPv4 options skipped only on the
//! outside, IPv6 extension headers not walked), and a root test
//! (`dataplane/gateway/tests/xdp/classifier.rs`) runs all three over the same frames and asserts
//! the same answers. `natfw replay` classifies captures with it ([`SteeringRules::capture`]),
//! the engine picks a source's SNAT entry with [`source_class`] (through [`crate::snat::Snat`]),
//! and the gateway fills the program's maps from the same [`SteeringRules`].

use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;
use natfw_policy::Gateway;

use crate::engine::Side;
use crate::wire::{ethernet, proto};

/// What the program steers, derived from the configuration and the live system.
#[derive(Debug, Clone, Default)]
pub struct SteeringRules {
    /// SNAT source prefixes (inside: steer when the source is in one).
    pub snat: Vec<IpNet>,
    /// Sources that the kernel handles (inside: never steered).
    pub bypass: Vec<IpNet>,
    /// The EIPs (outside: steer when the destination is one).
    pub eips: Vec<IpAddr>,
    /// Every address of the gateway itself (inside: never steered).
    pub gateway_addrs: Vec<IpAddr>,
    /// TCP/UDP destination ports on an EIP that stay with the kernel (its own sockets and the
    /// masquerade of bypassed sources).
    pub kernel_ports: Option<RangeInclusive<u16>>,
}

/// The decision for one frame, named like the XDP program's counter slots
/// (`enum natfw_counter`): [`Decision::Steer`] goes to natfw, every other one to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// natfw takes it: an SNAT-bound packet on the inside, a packet to an EIP on the outside.
    Steer,
    /// ARP.
    PassArp,
    /// Neither IPv4, IPv6 nor ARP (LLDP, a second VLAN tag, ...).
    PassNonIp,
    /// The gateway's own: to one of its addresses (inside), to the kernel's port range on an
    /// EIP (outside).
    PassGateway,
    /// From an SNAT source in the bypass list: the kernel masquerades it.
    PassBypass,
    /// From a source in no SNAT entry.
    PassNotSnat,
    /// Anything else: truncated headers, multicast and broadcast, IPv6 neighbour discovery,
    /// not to an EIP (outside).
    PassOther,
}

/// How a private source is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceClass {
    /// In no SNAT entry: not ours (the kernel routes it, or it is for the gateway itself).
    NotOurs,
    /// In an SNAT entry but bypassed: the kernel masquerades it, the firewall does not look.
    Bypass,
    /// SNAT-bound through entry `.0` (the index into the `snat` prefixes given, first match).
    Entry(usize),
}

/// The one source decision: the first prefix of `snat` holding `src` (give them most specific
/// first for longest-prefix match), unless `src` is in `bypass`.
pub fn source_class<'a>(
    snat: impl IntoIterator<Item = &'a IpNet>,
    bypass: &[IpNet],
    src: IpAddr,
) -> SourceClass {
    let Some(i) = snat.into_iter().position(|n| n.contains(&src)) else {
        return SourceClass::NotOurs;
    };
    if bypass.iter().any(|b| b.contains(&src)) {
        SourceClass::Bypass
    } else {
        SourceClass::Entry(i)
    }
}

/// How `natfw replay` treats a captured frame (captures are taken on the inside; a capture
/// taken on the outside shows packets to the EIPs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// SNAT-bound: hand to the engine as [`Side::Inside`].
    Outbound,
    /// A server's reply to a private host as seen on the inside: rewrite it into the outside
    /// view (`Engine::to_outside_view`), then hand it in as [`Side::Outside`].
    InsideReply,
    /// Addressed to an EIP: [`Side::Outside`] as is.
    ToEip,
    /// From a bypassed source: the kernel's, not the engine's.
    Bypassed,
    /// IP, but none of the above.
    NotOurs,
    /// Not IPv4/IPv6, or its headers are cut short.
    Unparsable,
}

/// Where the L3 header starts and its EtherType, reading at most one 802.1Q/802.1ad tag, as
/// the XDP program does. `None` when the frame is shorter than its L2 header.
pub fn l3_start(frame: &[u8]) -> Option<(usize, u16)> {
    let at = |o: usize| Some(u16::from_be_bytes([*frame.get(o)?, *frame.get(o + 1)?]));
    let mut off = ethernet::field::ETHERTYPE;
    let mut ty = at(off)?;
    if ty == ethernet::TPID_8021Q || ty == ethernet::TPID_8021AD {
        off += ethernet::TAG_LEN;
        ty = at(off)?;
    }
    Some((off + 2, ty))
}

/// The L3 header's offset and destination address of an IPv4 or IPv6 frame (one VLAN tag at
/// most), for the next-hop lookup of a frame about to leave.
pub fn l3_destination(frame: &[u8]) -> Option<(usize, IpAddr)> {
    let (off, ty) = l3_start(frame)?;
    let l3 = frame.get(off..)?;
    let dst = match ty {
        ethernet::ETHERTYPE_IPV4 => IpAddr::from(addr4(l3, 16)?),
        ethernet::ETHERTYPE_IPV6 => IpAddr::from(addr16(l3, 24)?),
        _ => return None,
    };
    Some((off, dst))
}

fn addr4(b: &[u8], at: usize) -> Option<[u8; 4]> {
    b.get(at..at + 4)?.try_into().ok()
}

fn addr16(b: &[u8], at: usize) -> Option<[u8; 16]> {
    b.get(at..at + 16)?.try_into().ok()
}

/// An address as the program's `struct addr_key` holds it: IPv4 as IPv4-mapped IPv6.
fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

impl SteeringRules {
    /// The rules a configuration alone gives (no gateway addresses, no kernel port range):
    /// what `natfw replay` uses.
    pub fn from_gateway(gw: &Gateway) -> SteeringRules {
        let mut snat: Vec<IpNet> = gw.snat.iter().map(|e| e.source).collect();
        snat.sort_by_key(|n| std::cmp::Reverse(n.prefix_len()));
        SteeringRules {
            snat,
            bypass: gw.bypass.clone(),
            eips: gw.eips.clone(),
            gateway_addrs: Vec::new(),
            kernel_ports: None,
        }
    }

    /// How a source is handled; see [`source_class`].
    pub fn source(&self, src: IpAddr) -> SourceClass {
        source_class(&self.snat, &self.bypass, src)
    }

    fn in_set(set: &[IpAddr], key: [u8; 16]) -> bool {
        set.iter().any(|a| mapped(*a) == key)
    }

    fn kernel_port(&self, l4_proto: u8, l4: Option<&[u8]>) -> bool {
        let Some(range) = &self.kernel_ports else {
            return false;
        };
        if l4_proto != proto::TCP && l4_proto != proto::UDP {
            return false;
        }
        // Both headers start with source port, destination port.
        match l4.and_then(|l4| l4.get(..4)) {
            Some(p) => range.contains(&u16::from_be_bytes([p[2], p[3]])),
            None => false,
        }
    }

    /// The XDP program's decision for `frame` arriving on `side`.
    pub fn decide(&self, side: Side, frame: &[u8]) -> Decision {
        let Some((off, ty)) = l3_start(frame) else {
            return Decision::PassOther;
        };
        let l3 = &frame[off.min(frame.len())..];
        match ty {
            ethernet::ETHERTYPE_IPV4 => self.decide_v4(side, l3),
            ethernet::ETHERTYPE_IPV6 => self.decide_v6(side, l3),
            ethernet::ETHERTYPE_ARP => Decision::PassArp,
            _ => Decision::PassNonIp,
        }
    }

    fn decide_src(&self, src: IpAddr) -> Decision {
        match self.source(src) {
            SourceClass::NotOurs => Decision::PassNotSnat,
            SourceClass::Bypass => Decision::PassBypass,
            SourceClass::Entry(_) => Decision::Steer,
        }
    }

    fn decide_v4(&self, side: Side, ip: &[u8]) -> Decision {
        use crate::wire::ipv4::field;
        if ip.len() < crate::wire::ipv4::MIN_HEADER_LEN {
            return Decision::PassOther;
        }
        let (Some(src), Some(dst)) = (addr4(ip, field::SRC_ADDR), addr4(ip, field::DST_ADDR))
        else {
            return Decision::PassOther;
        };
        let dst_key = mapped(IpAddr::from(dst));
        if side == Side::Outside {
            if !Self::in_set(&self.eips, dst_key) {
                return Decision::PassOther;
            }
            let ihl = usize::from(ip[field::VER_IHL] & 0x0f) * 4;
            let frag = u16::from_be_bytes([ip[field::FLAGS_FRAG], ip[field::FLAGS_FRAG + 1]]);
            // Only the first fragment carries ports; later ones follow the engine.
            if ihl >= crate::wire::ipv4::MIN_HEADER_LEN
                && frag & 0x1fff == 0
                && self.kernel_port(ip[field::PROTOCOL], ip.get(ihl..))
            {
                return Decision::PassGateway;
            }
            return Decision::Steer;
        }
        // Multicast, limited broadcast and the gateway itself belong to the kernel.
        if dst[0] & 0xf0 == 0xe0 || dst == [0xff; 4] {
            return Decision::PassOther;
        }
        if Self::in_set(&self.gateway_addrs, dst_key) {
            return Decision::PassGateway;
        }
        self.decide_src(IpAddr::from(src))
    }

    fn decide_v6(&self, side: Side, ip: &[u8]) -> Decision {
        use crate::wire::ipv6::field;
        if ip.len() < crate::wire::ipv6::HEADER_LEN {
            return Decision::PassOther;
        }
        let (Some(src), Some(dst)) = (addr16(ip, field::SRC_ADDR), addr16(ip, field::DST_ADDR))
        else {
            return Decision::PassOther;
        };
        let next = ip[field::NEXT_HEADER];
        let l4 = ip.get(crate::wire::ipv6::HEADER_LEN..);
        // Neighbour discovery and router messages (ICMPv6 133..137) are the kernel's on both
        // sides: a neighbour advertisement to an EIP answers the gateway's own solicitation.
        if next == proto::ICMPV6 {
            match l4.and_then(|l4| l4.first()) {
                None => return Decision::PassOther,
                Some(133..=137) => return Decision::PassOther,
                Some(_) => {}
            }
        }
        if side == Side::Outside {
            if !Self::in_set(&self.eips, dst) {
                return Decision::PassOther;
            }
            // Extension headers are not walked: only a direct TCP/UDP header is checked.
            if self.kernel_port(next, l4) {
                return Decision::PassGateway;
            }
            return Decision::Steer;
        }
        if dst[0] == 0xff {
            return Decision::PassOther;
        }
        if Self::in_set(&self.gateway_addrs, dst) {
            return Decision::PassGateway;
        }
        self.decide_src(IpAddr::from(src))
    }

    /// How `natfw replay` treats a captured frame: what the gateway would take on the inside,
    /// else on the outside, else a reply to a private host seen on the inside.
    pub fn capture(&self, frame: &[u8]) -> Capture {
        match self.decide(Side::Inside, frame) {
            Decision::Steer => return Capture::Outbound,
            Decision::PassBypass => return Capture::Bypassed,
            Decision::PassArp | Decision::PassNonIp => return Capture::Unparsable,
            _ => {}
        }
        if self.decide(Side::Outside, frame) == Decision::Steer {
            return Capture::ToEip;
        }
        match crate::wire::parse(frame) {
            Err(_) => Capture::Unparsable,
            Ok(info) if self.source(info.dst) != SourceClass::NotOurs => Capture::InsideReply,
            Ok(_) => Capture::NotOurs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l3_start_reads_one_tag() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00, 0x45]);
        assert_eq!(l3_start(&f), Some((18, ethernet::ETHERTYPE_IPV4)));
        f[16] = 0x81; // a second tag is not read
        assert_eq!(l3_start(&f), Some((18, 0x8100)));
        assert_eq!(l3_start(&f[..13]), None);
        assert_eq!(l3_destination(&f), None);
    }

    #[test]
    fn source_class_is_first_match_and_bypass() {
        let snat: Vec<IpNet> = vec![
            "10.1.0.0/16".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let bypass: Vec<IpNet> = vec!["10.9.0.0/16".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            source_class(&snat, &bypass, ip("10.1.2.3")),
            SourceClass::Entry(0)
        );
        assert_eq!(
            source_class(&snat, &bypass, ip("10.2.2.3")),
            SourceClass::Entry(1)
        );
        assert_eq!(
            source_class(&snat, &bypass, ip("10.9.2.3")),
            SourceClass::Bypass
        );
        assert_eq!(
            source_class(&snat, &bypass, ip("172.16.0.1")),
            SourceClass::NotOurs
        );
    }
}
