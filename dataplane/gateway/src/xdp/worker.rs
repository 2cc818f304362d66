//! Split mode's partition of flows among packet workers: the worker whose slow path
//! `natfw_steer` sends a steered frame to. The same rule as `worker_of()` in
//! `ebpf/natfw.bpf.c`; a root test (`tests/xdp/workers.rs`) runs both on the same frames.
//!
//! Both directions of a flow reach the same worker with no state shared between workers: the
//! worker is a port (host byte order) modulo the worker count — inside the TCP/UDP source port,
//! outside the destination port (the engine picks SNAT ports congruent to the client's source
//! port modulo the worker count), the ICMP/ICMPv6 echo identifier on both sides. ICMP other
//! than echo and errors, ICMPv6 likewise, and IPv4 protocols other than TCP/UDP/ICMP go to
//! worker 0. Every worker gets a copy of IPv4 fragments, ICMP errors (ICMPv4 types 3, 4, 5, 11,
//! 12; ICMPv6 types 1 to 4), IPv6 whose next header is not TCP, UDP or ICMPv6 (extension
//! headers, the fragment header among them) and of any frame whose L4 header is not wholly
//! there: each engine keeps what it owns after parsing (and reassembly) and ignores the rest.

use super::maps::{IfSide, WORKERS_MAX};

/// Where a steered frame goes among the packet workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerChoice {
    /// This worker's slow path only.
    One(u16),
    /// A copy to every worker's slow path.
    All,
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
/// Fixed header sizes the program checks: TCP, UDP, ICMP/ICMPv6 (type .. sequence number).
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const ICMP_HLEN: usize = 8;

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    let b = frame.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// The worker of a frame `natfw_steer` steers on `side` (Ethernet header first, at most one
/// VLAN tag), among `workers` (0 is taken as 1, above [`WORKERS_MAX`] as [`WORKERS_MAX`], as
/// the program does). With one worker always `One(0)`.
pub fn worker_of(side: IfSide, frame: &[u8], workers: u16) -> WorkerChoice {
    let n = workers.clamp(1, WORKERS_MAX as u16);
    if n == 1 {
        return WorkerChoice::One(0);
    }
    classify(side, frame, n).unwrap_or(WorkerChoice::All)
}

/// `None`: a header is cut short (every worker).
fn classify(side: IfSide, frame: &[u8], n: u16) -> Option<WorkerChoice> {
    let one = |port: u16| Some(WorkerChoice::One(port % n));
    let mut proto = be16(frame, 12)?;
    let mut l3 = 14;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = be16(frame, 16)?;
        l3 = 18;
    }
    let (l4proto, l4) = match proto {
        ETH_P_IP => {
            let ip = frame.get(l3..l3 + 20)?;
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return Some(WorkerChoice::All); // MF or a fragment offset
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl < 20 {
                return Some(WorkerChoice::All);
            }
            (ip[9], l3 + ihl)
        }
        ETH_P_IPV6 => {
            let ip = frame.get(l3..l3 + 40)?;
            (ip[6], l3 + 40)
        }
        _ => return Some(WorkerChoice::One(0)),
    };
    let v6 = proto == ETH_P_IPV6;
    match l4proto {
        TCP | UDP => {
            let hlen = if l4proto == TCP { TCP_HLEN } else { UDP_HLEN };
            frame.get(l4..l4 + hlen)?;
            let port = match side {
                IfSide::Inside => be16(frame, l4)?,
                IfSide::Outside => be16(frame, l4 + 2)?,
            };
            one(port)
        }
        ICMP if !v6 => {
            let h = frame.get(l4..l4 + ICMP_HLEN)?;
            match h[0] {
                0 | 8 => one(u16::from_be_bytes([h[4], h[5]])),
                3 | 4 | 5 | 11 | 12 => Some(WorkerChoice::All),
                _ => Some(WorkerChoice::One(0)),
            }
        }
        ICMPV6 if v6 => {
            let h = frame.get(l4..l4 + ICMP_HLEN)?;
            match h[0] {
                128 | 129 => one(u16::from_be_bytes([h[4], h[5]])),
                1..=4 => Some(WorkerChoice::All),
                _ => Some(WorkerChoice::One(0)),
            }
        }
        _ if v6 => Some(WorkerChoice::All),
        _ => Some(WorkerChoice::One(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerChoice::{All, One};
    use super::*;

    fn eth(ty: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ty.to_be_bytes());
        f
    }

    fn v4(proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut f = eth(ETH_P_IP);
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0, 10, 1, 2, 3, 198, 51, 100, 7]);
        f.extend_from_slice(l4);
        f
    }

    fn v6(next: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = eth(ETH_P_IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, next, 64]);
        f.extend_from_slice(&[0xfd; 16]);
        f.extend_from_slice(&[0x20; 16]);
        f.extend_from_slice(l4);
        f
    }

    fn ports(s: u16, d: u16, len: usize) -> Vec<u8> {
        let mut p = s.to_be_bytes().to_vec();
        p.extend_from_slice(&d.to_be_bytes());
        p.resize(len, 0);
        p
    }

    fn icmp(t: u8, id: u16) -> Vec<u8> {
        let mut m = vec![t, 0, 0, 0];
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    #[test]
    fn ports_and_echo_ids_pick_the_worker_by_side() {
        use IfSide::{Inside, Outside};
        let tcp = v4(TCP, 0x4000, &ports(40_001, 443, 20));
        assert_eq!(worker_of(Inside, &tcp, 2), One(1));
        assert_eq!(worker_of(Outside, &tcp, 2), One(1)); // 443 % 2
        assert_eq!(worker_of(Inside, &tcp, 3), One(40_001 % 3));
        assert_eq!(worker_of(Outside, &tcp, 3), One(443 % 3));
        let udp = v6(UDP, &ports(5000, 53, 8));
        assert_eq!(worker_of(Inside, &udp, 3), One(5000 % 3));
        assert_eq!(worker_of(Outside, &udp, 3), One(53 % 3));
        for (side, t) in [(Inside, 8), (Outside, 0)] {
            assert_eq!(worker_of(side, &v4(ICMP, 0, &icmp(t, 7)), 3), One(1));
        }
        assert_eq!(worker_of(Inside, &v6(ICMPV6, &icmp(128, 7)), 3), One(1));
        assert_eq!(worker_of(Inside, &v4(ICMP, 0, &icmp(13, 7)), 3), One(0));
        assert_eq!(worker_of(Inside, &v6(ICMPV6, &icmp(135, 7)), 3), One(0));
        assert_eq!(worker_of(Inside, &v4(47, 0, &[0; 8]), 3), One(0));
        // A VLAN tag is read past.
        let mut tagged = tcp.clone();
        tagged.splice(12..14, [0x81, 0, 0, 5, 0x08, 0]);
        assert_eq!(worker_of(Inside, &tagged, 3), One(40_001 % 3));
        // IP options: the ports are behind them.
        let mut opts = tcp.clone();
        opts[14] = 0x46;
        opts.splice(34..34, [1, 1, 1, 0]);
        assert_eq!(worker_of(Outside, &opts, 3), One(443 % 3));
    }

    #[test]
    fn fragments_errors_extension_headers_and_short_headers_go_to_every_worker() {
        use IfSide::{Inside, Outside};
        for side in [Inside, Outside] {
            for f in [
                v4(UDP, 0x2000, &ports(1, 2, 8)), // first fragment
                v4(UDP, 0x00b9, &ports(1, 2, 8)), // later fragment
                v4(ICMP, 0, &icmp(3, 1)),
                v4(ICMP, 0, &icmp(11, 1)),
                v6(ICMPV6, &icmp(1, 1)),
                v6(ICMPV6, &icmp(2, 1)),
                v6(44, &[17, 0, 0, 1, 0, 0, 0, 1]),
                v6(0, &[6, 0, 0, 0, 0, 0, 0, 0]),
                v4(TCP, 0, &ports(1, 2, 19)),
                v4(UDP, 0, &ports(1, 2, 7)),
                v4(ICMP, 0, &icmp(8, 1)[..7]),
                v6(TCP, &ports(1, 2, 10)),
                v4(TCP, 0, &[])[..30].to_vec(),
            ] {
                assert_eq!(worker_of(side, &f, 2), All, "{f:02x?}");
                assert_eq!(worker_of(side, &f, 1), One(0), "one worker: no copies");
                assert_eq!(worker_of(side, &f, 0), One(0), "0 workers is 1");
            }
        }
        // IHL below 5: malformed, every worker (the engines drop it).
        let mut bad = v4(TCP, 0, &ports(1, 2, 20));
        bad[14] = 0x44;
        assert_eq!(worker_of(Inside, &bad, 2), All);
        // Options announced but the TCP header behind them is cut short.
        let mut cut = v4(TCP, 0, &ports(1, 2, 20));
        cut[14] = 0x4f;
        assert_eq!(worker_of(Inside, &cut, 2), All);
        // Above WORKERS_MAX is WORKERS_MAX.
        let tcp = v4(TCP, 0, &ports(9, 443, 20));
        assert_eq!(worker_of(Inside, &tcp, 100), One(9 % WORKERS_MAX as u16));
        // Not IP (not steered anyway): worker 0.
        assert_eq!(worker_of(Inside, &eth(0x0806), 3), One(0));
        assert_eq!(worker_of(Inside, &[0; 10], 3), All);
    }
}
