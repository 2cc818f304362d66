//! DNS messages (RFC 1035): question name and A/AAAA/CNAME answers, so the engine can learn
//! which names resolved to which addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::reader::Reader;

/// Longest CNAME chain followed by [`DnsMessage::resolved`].
const MAX_CHAIN: usize = 16;
/// Most compression pointers followed while reading one name. Pointers must also point
/// strictly backwards, so loops are impossible anyway; this bounds the work.
const MAX_JUMPS: usize = 32;
/// Most answer records decoded (a UDP message holds far fewer; TCP ones could hold more).
const MAX_ANSWERS: usize = 256;

/// A record we care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsRecord {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// Canonical name, lower case, no trailing dot.
    Cname(String),
}

/// The parts of a DNS message the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    /// QR bit.
    pub is_response: bool,
    /// First question's name, lower case, no trailing dot (`""` for the root).
    pub qname: Option<String>,
    /// Class-IN A, AAAA and CNAME answers as (owner name, record, ttl); others are skipped.
    pub answers: Vec<(String, DnsRecord, u32)>,
}

/// Why a message did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsError(pub &'static str);

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad DNS message: {}", self.0)
    }
}

impl std::error::Error for DnsError {}

const SHORT: DnsError = DnsError("truncated");

/// Parse a DNS message (a UDP payload, or a TCP message without its 2-byte length prefix).
/// Counts are trusted only as far as the bytes go: a count larger than the records present is
/// an error. Authority and additional sections are not read.
pub fn parse(payload: &[u8]) -> Result<DnsMessage, DnsError> {
    let mut r = Reader::new(payload);
    let id = r.u16().ok_or(SHORT)?;
    let flags = r.u16().ok_or(SHORT)?;
    let qdcount = r.u16().ok_or(SHORT)?;
    let ancount = r.u16().ok_or(SHORT)?;
    r.skip(4).ok_or(SHORT)?; // nscount, arcount
    if (flags >> 11) & 0xf != 0 {
        // Only standard queries carry names we want; NOTIFY/UPDATE reuse sections differently.
        return Err(DnsError("not a standard query"));
    }
    let mut qname = None;
    for i in 0..qdcount {
        let name = read_name(payload, &mut r)?;
        r.skip(4).ok_or(SHORT)?; // qtype, qclass
        if i == 0 {
            qname = Some(name);
        }
    }
    let mut answers = Vec::new();
    for _ in 0..ancount {
        let owner = read_name(payload, &mut r)?;
        let typ = r.u16().ok_or(SHORT)?;
        let class = r.u16().ok_or(SHORT)?;
        let ttl = r.u32().ok_or(SHORT)?;
        let rdlen = usize::from(r.u16().ok_or(SHORT)?);
        let rdata_start = r.pos();
        let rdata = r.take(rdlen).ok_or(DnsError("rdata length overflows"))?;
        if class != 1 || answers.len() >= MAX_ANSWERS {
            continue;
        }
        let rec = match typ {
            1 => DnsRecord::A(Ipv4Addr::from(
                <[u8; 4]>::try_from(rdata).map_err(|_| DnsError("bad A rdata"))?,
            )),
            28 => DnsRecord::Aaaa(Ipv6Addr::from(
                <[u8; 16]>::try_from(rdata).map_err(|_| DnsError("bad AAAA rdata"))?,
            )),
            5 => {
                // The name may point back into the message, but its inline part must fit rdata.
                let mut rr = Reader::new(&payload[..rdata_start + rdlen]);
                rr.skip(rdata_start).ok_or(SHORT)?;
                let target = read_name(payload, &mut rr)?;
                if !rr.is_empty() {
                    return Err(DnsError("bad CNAME rdata"));
                }
                DnsRecord::Cname(target)
            }
            _ => continue,
        };
        answers.push((owner, rec, ttl));
    }
    Ok(DnsMessage {
        id,
        is_response: flags & 0x8000 != 0,
        qname,
        answers,
    })
}

/// Read a possibly compressed name at `r`'s position in `msg`; `r` ends after its inline part.
fn read_name<'a>(msg: &'a [u8], r: &mut Reader<'a>) -> Result<String, DnsError> {
    let mut name = String::new();
    let mut jumps = 0;
    // Where the current run of labels started: a pointer must go strictly before it.
    let mut run_start = r.pos();
    let mut cur = r.clone();
    let mut jumped = false;
    loop {
        let len = cur.u8().ok_or(SHORT)?;
        match len >> 6 {
            0 if len == 0 => break,
            0 => {
                let label = cur.take(usize::from(len)).ok_or(SHORT)?;
                if name.len() + label.len() + 1 > 254 {
                    return Err(DnsError("name too long"));
                }
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    if !(b.is_ascii_graphic()) || b == b'.' {
                        return Err(DnsError("unsupported byte in name"));
                    }
                    name.push(b.to_ascii_lowercase() as char);
                }
            }
            3 => {
                let lo = cur.u8().ok_or(SHORT)?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, lo]));
                jumps += 1;
                if target >= run_start || jumps > MAX_JUMPS {
                    return Err(DnsError("compression pointer loop"));
                }
                if !jumped {
                    *r = cur.clone();
                    jumped = true;
                }
                cur = Reader::new(msg);
                cur.skip(target).ok_or(SHORT)?;
                run_start = target;
            }
            _ => return Err(DnsError("unsupported label type")),
        }
    }
    if !jumped {
        *r = cur;
    }
    Ok(name)
}

impl DnsMessage {
    /// Addresses the query name resolved to, following the CNAME chain from it: the query name
    /// and every alias on the chain each map to the final A/AAAA records. TTL is the smallest
    /// along the way. Records not reachable from the query name are ignored.
    pub fn resolved(&self) -> Vec<(String, IpAddr, u32)> {
        let mut out = Vec::new();
        let Some(q) = self.qname.as_deref() else {
            return out;
        };
        let mut chain: Vec<(&str, u32)> = vec![(q, u32::MAX)];
        let mut name = q;
        let mut ttl = u32::MAX;
        for _ in 0..MAX_CHAIN {
            let next = self.answers.iter().find_map(|(owner, rec, t)| match rec {
                DnsRecord::Cname(target) if owner == name => Some((target.as_str(), *t)),
                _ => None,
            });
            let Some((target, t)) = next else { break };
            if chain.iter().any(|(n, _)| *n == target) {
                break; // CNAME loop
            }
            ttl = ttl.min(t);
            chain.push((target, ttl));
            name = target;
        }
        for (owner, rec, t) in &self.answers {
            let ip = match rec {
                DnsRecord::A(a) => IpAddr::V4(*a),
                DnsRecord::Aaaa(a) => IpAddr::V6(*a),
                DnsRecord::Cname(_) => continue,
            };
            if owner != name {
                continue;
            }
            let ttl = ttl.min(*t);
            for (alias, _) in &chain {
                out.push(((*alias).to_owned(), ip, ttl));
            }
        }
        out
    }
}

/// Largest DNS-over-TCP message reassembled from the server side; longer answers are skipped.
pub const MAX_TCP_MESSAGE: usize = 16 * 1024;

/// The first message of a DNS-over-TCP stream (RFC 7766: a 2-byte length, then the message),
/// which may arrive across segments.
pub fn tcp_message(stream: &[u8]) -> super::Progress<&[u8]> {
    let [hi, lo, rest @ ..] = stream else {
        return super::Progress::NeedMore;
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    if len < 12 {
        return super::Progress::Invalid("DNS/TCP message shorter than a header");
    }
    match rest.get(..len) {
        Some(m) => super::Progress::Done(m),
        None => super::Progress::NeedMore,
    }
}

/// Splits one direction of a DNS-over-TCP connection into messages, fed segments in sequence
/// order. Bounded: one message of at most [`MAX_TCP_MESSAGE`] bytes is buffered; longer ones
/// are skipped. A gap (a segment ahead of the next expected byte) stops it: the direction's
/// messages can no longer be delimited.
#[derive(Debug)]
pub struct TcpMessages {
    next: u32,
    buf: Vec<u8>,
    /// Bytes of an over-long message still to skip.
    skip: usize,
    /// Lost track of the framing.
    pub lost: bool,
}

impl TcpMessages {
    /// Splitting the direction whose first payload byte has sequence number `first_seq`.
    pub fn new(first_seq: u32) -> Self {
        TcpMessages {
            next: first_seq,
            buf: Vec::new(),
            skip: 0,
            lost: false,
        }
    }

    /// Feed a segment; complete messages go to `out` (without their length prefix).
    pub fn push(&mut self, seq: u32, data: &[u8], mut out: impl FnMut(&[u8])) {
        if self.lost || data.is_empty() {
            return;
        }
        let off = seq.wrapping_sub(self.next) as i32;
        if off > 0 {
            self.lost = true;
            return;
        }
        // A retransmission: only the bytes past what was seen are new.
        let old = off.unsigned_abs() as usize;
        if old >= data.len() {
            return;
        }
        let mut data = &data[old..];
        self.next = self.next.wrapping_add(data.len() as u32);
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let want = if self.buf.len() < 2 {
                2
            } else {
                2 + usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]))
            };
            if want == 2 && self.buf.len() == 2 {
                // An empty message: nothing to deliver.
                self.buf.clear();
                continue;
            }
            if want > 2 + MAX_TCP_MESSAGE {
                self.skip = want - self.buf.len();
                self.buf.clear();
                continue;
            }
            let n = (want - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == want && want > 2 {
                out(&self.buf[2..]);
                self.buf.clear();
            }
        }
    }

    /// Bytes buffered.
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::testpcap::udp_datagrams;
    use crate::l7::Progress;

    #[test]
    fn corpus_query_and_answer() {
        let d = udp_datagrams("dns_query.pcap");
        assert_eq!(d.len(), 2);
        let q = parse(&d[0].2).unwrap();
        assert!(!q.is_response);
        assert_eq!(q.qname.as_deref(), Some("shop.example.test"));
        assert!(q.answers.is_empty());
        let a = parse(&d[1].2).unwrap();
        assert!(a.is_response && a.id == q.id);
        let res = a.resolved();
        assert_eq!(res.len(), 1);
        assert_eq!(res[0].0, "shop.example.test");
        assert_eq!(res[0].1, "198.51.100.10".parse::<IpAddr>().unwrap());
    }

    /// Builder for crafted messages: header + raw body.
    fn msg(flags: u16, qd: u16, an: u16, body: &[u8]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34];
        for v in [flags, qd, an, 0, 0] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m.extend_from_slice(body);
        m
    }

    fn rr(owner: &[u8], typ: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
        let mut v = owner.to_vec();
        v.extend_from_slice(&typ.to_be_bytes());
        v.extend_from_slice(&1u16.to_be_bytes());
        v.extend_from_slice(&ttl.to_be_bytes());
        v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        v.extend_from_slice(rdata);
        v
    }

    #[test]
    fn cname_chain_with_compression() {
        // Q www.Example.test A; www -> cdn.example.net -> edge.example.net -> 2 addresses.
        let mut body = b"\x03www\x07Example\x04test\x00\x00\x01\x00\x01".to_vec();
        // cdn.example.net at offset 12+len(question)+...: build with pointers.
        let q_off = 12u16;
        body.extend(rr(
            &(0xc000 | q_off).to_be_bytes(),
            5,
            300,
            b"\x03cdn\x07example\x03net\x00",
        ));
        let cdn_off = (12 + 22 + 12) as u16; // question (22) + owner ptr (2) + fixed (10)
        let mut edge = b"\x04edge".to_vec();
        edge.extend_from_slice(&(0xc000 | (cdn_off + 4)).to_be_bytes()); // -> example.net
        body.extend(rr(&(0xc000 | cdn_off).to_be_bytes(), 5, 60, &edge));
        let edge_off = cdn_off + 17 + 12;
        body.extend(rr(
            &(0xc000 | edge_off).to_be_bytes(),
            1,
            30,
            &[192, 0, 2, 7],
        ));
        body.extend(rr(
            &(0xc000 | edge_off).to_be_bytes(),
            28,
            600,
            &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
        ));
        // An unrelated A record that the query never led to.
        body.extend(rr(b"\x04evil\x04test\x00", 1, 30, &[203, 0, 113, 66]));
        let m = parse(&msg(0x8180, 1, 5, &body)).unwrap();
        assert_eq!(m.qname.as_deref(), Some("www.example.test"));
        assert_eq!(m.answers[1].0, "cdn.example.net");
        assert_eq!(m.answers[1].1, DnsRecord::Cname("edge.example.net".into()));
        let got = m.resolved();
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            names,
            ["www.example.test", "cdn.example.net", "edge.example.net"].repeat(2)
        );
        assert!(got[..3]
            .iter()
            .all(|g| g.1 == "192.0.2.7".parse::<IpAddr>().unwrap() && g.2 == 30));
        assert!(got[3..]
            .iter()
            .all(|g| g.1 == "2001:db8::9".parse::<IpAddr>().unwrap() && g.2 == 60));
    }

    #[test]
    fn hostile_messages() {
        // Pointer to itself.
        let m = msg(0, 1, 0, &[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&m), Err(DnsError("compression pointer loop")));
        // Two pointers pointing at each other (forward pointer rejected).
        let m = msg(0, 1, 0, &[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&m), Err(DnsError("compression pointer loop")));
        // Lying counts.
        let m = msg(0x8180, 1, 3, b"\x01a\x00\x00\x01\x00\x01");
        assert!(parse(&m).is_err());
        let m = msg(0, 40000, 0, b"\x01a\x00\x00\x01\x00\x01");
        assert!(parse(&m).is_err());
        // Lying rdata length, bad A length, label type 0b01.
        let m = msg(0x8180, 0, 1, &rr(b"\x00", 1, 1, &[1, 2, 3, 4])[..12]);
        assert!(parse(&m).is_err());
        assert!(parse(&msg(0x8180, 0, 1, &rr(b"\x00", 1, 1, &[1, 2, 3]))).is_err());
        assert!(parse(&msg(0, 1, 0, &[0x41, 0, 0, 1, 0, 1])).is_err());
        // CNAME whose inline name runs past its rdata.
        let mut body = rr(b"\x00", 5, 1, b"\x01a\x00");
        let n = body.len();
        body[n - 4] = 2; // rdlen 3 -> 2
        assert!(parse(&msg(0x8180, 0, 1, &body[..n - 1])).is_err());
        // Too long name.
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse(&msg(0, 1, 0, &long)), Err(DnsError("name too long")));
        assert_eq!(parse(&[0; 11]), Err(SHORT));
    }

    #[test]
    fn cname_loop_terminates() {
        let mut body = b"\x01a\x00\x00\x01\x00\x01".to_vec();
        body.extend(rr(b"\x01a\x00", 5, 1, b"\x01b\x00"));
        body.extend(rr(b"\x01b\x00", 5, 1, b"\x01a\x00"));
        body.extend(rr(b"\x01b\x00", 1, 1, &[192, 0, 2, 1]));
        let m = parse(&msg(0x8180, 1, 3, &body)).unwrap();
        let got = m.resolved();
        assert_eq!(got.len(), 2, "{got:?}");
    }

    /// Length-prefixed messages split anywhere, retransmitted, too long or after a gap.
    #[test]
    fn tcp_framing_across_segments() {
        let m1 = msg(0x8180, 1, 0, b"\x01a\x04test\x00\x00\x01\x00\x01");
        let m2 = msg(0x8180, 1, 0, b"\x01b\x04test\x00\x00\x01\x00\x01");
        let mut wire = Vec::new();
        for m in [&m1, &m2] {
            wire.extend_from_slice(&(m.len() as u16).to_be_bytes());
            wire.extend_from_slice(m);
        }
        assert_eq!(tcp_message(&wire).done(), Some(&m1[..]));
        assert_eq!(tcp_message(&wire[..5]), Progress::NeedMore);
        assert!(matches!(
            tcp_message(&[0, 3, 1, 2, 3]),
            Progress::Invalid(_)
        ));
        for step in [1, 2, 3, 7, wire.len()] {
            let mut t = TcpMessages::new(1000);
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut seq = 1000u32;
            for c in wire.chunks(step) {
                t.push(seq, c, |m| got.push(m.to_vec()));
                // A retransmission of the same segment adds nothing.
                t.push(seq, c, |m| got.push(m.to_vec()));
                seq = seq.wrapping_add(c.len() as u32);
            }
            assert_eq!(got, vec![m1.clone(), m2.clone()], "step {step}");
        }
        // A gap stops the splitter (framing lost), counted in `lost`.
        let mut t = TcpMessages::new(1);
        let mut n = 0;
        t.push(5, &wire[4..], |_| n += 1);
        assert!(t.lost);
        assert_eq!(n, 0);
        // An over-long message is skipped, the next one still found; nothing large is kept.
        let mut big = ((MAX_TCP_MESSAGE + 10) as u16).to_be_bytes().to_vec();
        big.resize(2 + MAX_TCP_MESSAGE + 10, 0);
        big.extend_from_slice(&wire[..2 + m1.len()]);
        let mut t = TcpMessages::new(0);
        let mut got = Vec::new();
        for (i, c) in big.chunks(1000).enumerate() {
            t.push((i * 1000) as u32, c, |m| got.push(m.to_vec()));
            assert!(t.held() <= 2 + MAX_TCP_MESSAGE);
        }
        assert_eq!(got, vec![m1]);
    }
}
