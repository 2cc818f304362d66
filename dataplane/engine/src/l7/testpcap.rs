//! Test helper: pull TCP streams and UDP datagrams out of the corpus pcaps (Ethernet, IPv4/IPv6).
//! Shared by unit tests and the `l7_*` integration tests (included there with `#[path]`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

/// Path of a file in the repository's copy of the shared corpus, or of our own captures for a
/// name starting with `captures/`.
pub fn corpus(name: &str) -> PathBuf {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    match name.strip_prefix("captures/") {
        Some(own) => data.join("captures").join(own),
        None => data.join("corpus").join(name),
    }
}

/// One decoded L4 packet.
#[derive(Debug, Clone)]
pub struct Pkt {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// 6 (TCP), 17 (UDP), 1/58 (ICMP) ...
    pub proto: u8,
    pub seq: u32,
    pub syn: bool,
    pub ack: bool,
    pub payload: Vec<u8>,
}

/// Every IPv4/IPv6 packet in the capture (ports 0 for non-TCP/UDP).
pub fn packets(name: &str) -> Vec<Pkt> {
    let file = std::fs::File::open(corpus(name)).expect("corpus file");
    let mut rd = pcap_file::pcap::PcapReader::new(file).expect("pcap header");
    let mut out = Vec::new();
    while let Some(p) = rd.next_packet() {
        let p = p.expect("pcap record");
        if let Some(pkt) = decode(&p.data) {
            out.push(pkt);
        }
    }
    out
}

fn decode(f: &[u8]) -> Option<Pkt> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
    off += 2;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = u16::from_be_bytes([*f.get(off + 2)?, *f.get(off + 3)?]);
        off += 4;
    }
    let (src, dst, proto, l4) = match ethertype {
        0x0800 => {
            let ip = f.get(off..)?;
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                ip[9],
                ip.get(ihl..total)?,
            )
        }
        0x86dd => {
            let ip = f.get(off..)?;
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                ip[6],
                ip.get(40..40 + plen)?,
            )
        }
        _ => return None,
    };
    let port = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let mut pkt = Pkt {
        src: SocketAddr::new(src, 0),
        dst: SocketAddr::new(dst, 0),
        proto,
        seq: 0,
        syn: false,
        ack: false,
        payload: Vec::new(),
    };
    match proto {
        6 if l4.len() >= 20 => {
            pkt.src.set_port(port(l4, 0));
            pkt.dst.set_port(port(l4, 2));
            pkt.seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            let doff = usize::from(l4[12] >> 4) * 4;
            pkt.syn = l4[13] & 0x02 != 0;
            pkt.ack = l4[13] & 0x10 != 0;
            pkt.payload = l4.get(doff..)?.to_vec();
        }
        17 if l4.len() >= 8 => {
            pkt.src.set_port(port(l4, 0));
            pkt.dst.set_port(port(l4, 2));
            pkt.payload = l4[8..].to_vec();
        }
        _ => pkt.payload = l4.to_vec(),
    }
    Some(pkt)
}

/// A TCP connection's two byte streams, in sequence order (retransmissions and reordering
/// resolved; the first copy of a byte wins), as the engine's `StreamBuf` would present them.
#[derive(Debug, Clone)]
pub struct TcpFlow {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub client_stream: Vec<u8>,
    pub server_stream: Vec<u8>,
    /// Payload-carrying client segments, in capture order.
    pub client_segments: usize,
}

/// Every TCP connection in the capture, in order of first appearance; the client is the side
/// that sent the SYN (or the first packet when the SYN is missing).
pub fn tcp_flows(name: &str) -> Vec<TcpFlow> {
    struct Dir {
        isn: Option<u32>,
        segs: Vec<(u32, Vec<u8>)>,
    }
    let mut order: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut dirs: BTreeMap<(SocketAddr, SocketAddr), Dir> = BTreeMap::new();
    for p in packets(name).into_iter().filter(|p| p.proto == 6) {
        let key = (p.src, p.dst);
        if !seen.contains(&key) && !seen.contains(&(p.dst, p.src)) {
            seen.insert(key);
            // A SYN+ACK first means we missed the SYN: the receiver is the client.
            order.push(if p.syn && p.ack { (p.dst, p.src) } else { key });
        }
        let d = dirs.entry(key).or_insert(Dir {
            isn: None,
            segs: Vec::new(),
        });
        if p.syn {
            d.isn = Some(p.seq.wrapping_add(1));
        } else if !p.payload.is_empty() {
            d.segs.push((p.seq, p.payload));
        }
    }
    let stream = |d: Option<&Dir>| -> (Vec<u8>, usize) {
        let Some(d) = d else { return (Vec::new(), 0) };
        let Some(isn) = d.isn.or_else(|| d.segs.iter().map(|s| s.0).min()) else {
            return (Vec::new(), 0);
        };
        let mut segs: Vec<(usize, &[u8])> = d
            .segs
            .iter()
            .map(|(s, b)| (s.wrapping_sub(isn) as usize, b.as_slice()))
            .collect();
        segs.sort_by_key(|s| s.0);
        let mut out = Vec::new();
        for (off, b) in segs {
            if off <= out.len() && off + b.len() > out.len() {
                out.extend_from_slice(&b[out.len() - off..]);
            }
        }
        (out, d.segs.len())
    };
    order
        .into_iter()
        .map(|(c, s)| {
            let (client_stream, client_segments) = stream(dirs.get(&(c, s)));
            let (server_stream, _) = stream(dirs.get(&(s, c)));
            TcpFlow {
                client: c,
                server: s,
                client_stream,
                server_stream,
                client_segments,
            }
        })
        .collect()
}

/// UDP datagrams as (src, dst, payload), in capture order.
pub fn udp_datagrams(name: &str) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    packets(name)
        .into_iter()
        .filter(|p| p.proto == 17)
        .map(|p| (p.src, p.dst, p.payload))
        .collect()
}

/// A minimal ClientHello record with one host_name and the given ALPN names.
pub fn synth_hello(host: &[u8], alpn: &[&[u8]]) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut sni = vec![0];
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&((sni.len() + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    if !alpn.is_empty() {
        let mut l = Vec::new();
        for a in alpn {
            l.push(a.len() as u8);
            l.extend_from_slice(a);
        }
        ext.extend_from_slice(&[0, 16]);
        ext.extend_from_slice(&((l.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(l.len() as u16).to_be_bytes());
        ext.extend_from_slice(&l);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    rec.push(1);
    rec.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    rec.extend_from_slice(&body);
    rec
}
