//! Helpers shared by the test modules of this binary: hand-built frames, the steering rules
//! the program tests use, the root/skip check and loading the program.

use std::net::IpAddr;

use natfw_gateway::xdp::{IfSide, Steering, SteeringRules};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const STEER: u32 = XDP_DROP;

pub fn eth(ty: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ty.to_be_bytes());
    f
}

pub fn ports(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = sport.to_be_bytes().to_vec();
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0; 16]);
    p
}

pub fn v4_with(mut f: Vec<u8>, src: &str, dst: &str, proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    let (s, d): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    let total = (20 + l4.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&s.octets());
    f.extend_from_slice(&d.octets());
    f.extend_from_slice(l4);
    f
}

pub fn v4(src: &str, dst: &str, proto: u8, l4: &[u8]) -> Vec<u8> {
    v4_with(eth(0x0800), src, dst, proto, 0, l4)
}

pub fn tcp4(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    v4(src, dst, 6, &ports(40000, dport))
}

pub fn v6(src: &str, dst: &str, next: u8, l4: &[u8]) -> Vec<u8> {
    let (s, d): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    let mut f = eth(0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&s.octets());
    f.extend_from_slice(&d.octets());
    f.extend_from_slice(l4);
    f
}

pub fn rules() -> SteeringRules {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    SteeringRules {
        snat: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        bypass: vec![
            "10.9.0.0/16".parse().unwrap(),
            "fd00:9::/32".parse().unwrap(),
        ],
        eips: vec![ip("203.0.113.1"), ip("2001:db8::1")],
        gateway_addrs: vec![
            ip("10.0.0.1"),
            ip("203.0.113.1"),
            ip("fd00::1"),
            ip("2001:db8::1"),
        ],
        kernel_ports: Some(61000..=61999),
    }
}

pub fn skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: not root");
        return true;
    }
    if natfw_gateway::xdp::PROGRAM.is_empty() {
        eprintln!("skipped: built without the XDP program (no clang)");
        return true;
    }
    false
}

pub fn load(side: IfSide) -> Option<Steering> {
    // The interface name only labels errors: nothing is attached.
    match Steering::load("lo", side, &rules()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("skipped: the kernel cannot load the program: {e}");
            None
        }
    }
}
