//! TLS ClientHello extraction from the start of a client's TCP byte stream.
//!
//! The handshake message is reassembled across TLS records (clients may fragment it; the common
//! single-record case is parsed in place without copying) and then walked with [`Reader`]:
//! server_name, ALPN and encrypted_client_hello are the only extensions we look at.

use std::net::IpAddr;

use super::reader::Reader;
use super::{ClientHelloInfo, Progress};

/// Largest ClientHello handshake message (body + 4-byte header) we reassemble. Post-quantum
/// ClientHellos are about 1.9 KB; 16 KiB leaves room for big session tickets.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// TLSPlaintext.length limit (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;

const CONTENT_HANDSHAKE: u8 = 22;
const HS_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_ECH: u16 = 0xfe0d;
/// The draft ESNI extension, the ancestor of ECH: treated the same way.
const EXT_ESNI: u16 = 0xffce;

/// True when `client` starts like a TLS handshake record (content type 22, version 3.x). With
/// fewer than 3 bytes this answers for the bytes present.
pub fn looks_like_tls(client: &[u8]) -> bool {
    match client {
        [] => false,
        [t] => *t == CONTENT_HANDSHAKE,
        [t, 3] => *t == CONTENT_HANDSHAKE,
        [t, 3, minor, ..] => *t == CONTENT_HANDSHAKE && *minor <= 4,
        _ => false,
    }
}

/// Parse the ClientHello at the start of `stream`, the client's TCP byte stream from its first
/// byte (contiguous, as much as has arrived).
///
/// `NeedMore` until the whole handshake message is there; `Invalid` on anything that is not a
/// well-formed ClientHello (other content types, lying lengths, over [`MAX_CLIENT_HELLO`]).
pub fn client_hello(stream: &[u8]) -> Progress<ClientHelloInfo> {
    reassembled(stream, parse_client_hello)
}

/// [`client_hello`] with the ALPN list reduced to what classification asks about.
pub(crate) fn client_hello_facts(stream: &[u8]) -> Progress<HelloFacts> {
    reassembled(stream, parse_hello::<AlpnSet>)
}

/// The record layer of [`client_hello`]: the handshake message reassembled from the records at
/// the start of `stream`, its body handed to `parse`.
fn reassembled<T>(stream: &[u8], parse: impl Fn(&[u8]) -> Result<T, &'static str>) -> Progress<T> {
    let mut r = Reader::new(stream);
    // Only allocated when the message spans records.
    let mut acc: Vec<u8> = Vec::new();
    loop {
        let Some(hdr) = r.take(5) else {
            return match stream.first() {
                Some(&t) if t != CONTENT_HANDSHAKE => {
                    Progress::Invalid("not a TLS handshake record")
                }
                _ => Progress::NeedMore,
            };
        };
        if hdr[0] != CONTENT_HANDSHAKE {
            return Progress::Invalid("not a TLS handshake record");
        }
        if hdr[1] != 3 || hdr[2] > 4 {
            return Progress::Invalid("bad TLS record version");
        }
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        if len == 0 {
            return Progress::Invalid("empty handshake record");
        }
        if len > MAX_RECORD {
            return Progress::Invalid("TLS record too long");
        }
        let Some(frag) = r.take(len) else {
            // Reject early what the partial record already shows to be wrong.
            if acc.is_empty() {
                if let Err(e) = complete_message(r.peek_rest()) {
                    return Progress::Invalid(e);
                }
            }
            return Progress::NeedMore;
        };
        if acc.is_empty() {
            match complete_message(frag) {
                Ok(Some(body)) => return finish(parse(body)),
                Ok(None) => {}
                Err(e) => return Progress::Invalid(e),
            }
        }
        // Bounded: `complete_message` rejects a declared length over MAX_CLIENT_HELLO and we
        // stop as soon as the declared length is reached, so `acc` stays under
        // MAX_CLIENT_HELLO + MAX_RECORD.
        acc.extend_from_slice(frag);
        match complete_message(&acc) {
            Ok(Some(body)) => return finish(parse(body)),
            Ok(None) => {}
            Err(e) => return Progress::Invalid(e),
        }
    }
}

/// A client stream with its [`client_hello_facts`] parse, made at most once however many
/// callers ask (the engine's ECH check, classification and name lookup all want it for the
/// same bytes).
#[derive(Debug)]
pub(crate) struct HelloOnce<'a> {
    stream: &'a [u8],
    parsed: Option<Progress<HelloFacts>>,
}

impl<'a> HelloOnce<'a> {
    /// Nothing parsed yet.
    pub(crate) fn new(stream: &'a [u8]) -> Self {
        HelloOnce {
            stream,
            parsed: None,
        }
    }

    /// The stream given at construction.
    pub(crate) fn stream(&self) -> &'a [u8] {
        self.stream
    }

    /// `client_hello_facts(stream)`, parsed on the first call.
    pub(crate) fn get(&mut self) -> &Progress<HelloFacts> {
        let stream = self.stream;
        self.parsed
            .get_or_insert_with(|| client_hello_facts(stream))
    }

    /// The parse, moved out (a later [`HelloOnce::get`] parses again).
    pub(crate) fn take(&mut self) -> Progress<HelloFacts> {
        self.parsed
            .take()
            .unwrap_or_else(|| client_hello_facts(self.stream))
    }
}

/// [`ClientHelloInfo`] with the ALPN names in `A`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Hello<A> {
    pub sni: Option<String>,
    pub sni_is_ip: bool,
    pub alpn: A,
    pub ech: bool,
}

/// A ClientHello as the engine uses it: [`ClientHelloInfo`] with the ALPN list reduced to the
/// protocols application classification asks about, so that parsing it allocates nothing but
/// the name.
pub(crate) type HelloFacts = Hello<AlpnSet>;

impl From<ClientHelloInfo> for HelloFacts {
    fn from(info: ClientHelloInfo) -> Self {
        let mut alpn = AlpnSet::default();
        for p in &info.alpn {
            alpn.add(p.as_bytes());
        }
        HelloFacts {
            sni: info.sni,
            sni_is_ip: info.sni_is_ip,
            alpn,
            ech: info.ech,
        }
    }
}

/// Which of the ALPN names classification asks about ([`AlpnSet::NAMES`]) a ClientHello
/// offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AlpnSet(u8);

impl AlpnSet {
    /// The names recorded; any other is not.
    pub(crate) const NAMES: [&'static str; 5] = ["h2", "http/1.1", "http/1.0", "imap", "pop3"];

    fn add(&mut self, name: &[u8]) {
        if let Some(i) = Self::NAMES.iter().position(|n| n.as_bytes() == name) {
            self.0 |= 1 << i;
        }
    }

    /// `name` (one of [`AlpnSet::NAMES`]) is offered.
    pub(crate) fn has(self, name: &str) -> bool {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

/// Where the parse puts the ALPN names: the full list, or the set classification asks about.
trait AlpnOut: Default {
    fn add(&mut self, name: &[u8]);
}

impl AlpnOut for Vec<String> {
    fn add(&mut self, name: &[u8]) {
        self.push(String::from_utf8_lossy(name).into_owned());
    }
}

impl AlpnOut for AlpnSet {
    fn add(&mut self, name: &[u8]) {
        AlpnSet::add(self, name);
    }
}

/// The padding extension (RFC 7685): its content must be zeros.
const EXT_PADDING: u16 = 21;

/// How many bytes at the start of `stream` (the client's TCP stream from its first byte, as
/// much as has arrived in order) are known to lie before the server_name extension of a
/// well-formed ClientHello: the record and handshake headers, the fixed fields (version,
/// random, session id, cipher suites, compression methods, extensions length) and every
/// extension before server_name whose type is known (a padding extension only as far as its
/// bytes are zeros). These bytes are handshake structure, not application data, and do not name
/// the destination, so they can go to the server while the name is awaited.
///
/// Never counted: the server_name extension and everything after it, an extension whose
/// 4-byte header has not fully arrived, the last byte of the handshake message (a complete
/// ClientHello is decided on, not released), anything after the message (0-RTT data), and a
/// ClientHello that spans TLS records. 0 for anything that is not (yet) a well-formed
/// ClientHello prefix; the first 9 bytes (record and handshake headers) must all be there.
pub fn bytes_before_name(stream: &[u8]) -> usize {
    walk_to_name(stream).0
}

/// The server_name of a ClientHello that has not fully arrived, once its server_name extension
/// has (same single-record prefix walk as [`bytes_before_name`]): `None` while it has not, or
/// when the stream is not a well-formed ClientHello prefix. The name is what the rest of the
/// message can no longer change (a second server_name makes the ClientHello invalid for any
/// TLS server); ALPN and ECH come with the whole message.
pub fn server_name_early(stream: &[u8]) -> Option<Result<ClientHelloInfo, &'static str>> {
    let (_, data) = walk_to_name(stream);
    let (a, b) = data?;
    Some(
        server_name(&stream[a..b]).map(|(sni, sni_is_ip)| ClientHelloInfo {
            sni,
            sni_is_ip,
            ..ClientHelloInfo::default()
        }),
    )
}

/// Where the ClientHello prefix walk stops: the bytes known to lie before server_name, and the
/// server_name extension's data `[start, end)` when all of it is there.
fn walk_to_name(stream: &[u8]) -> (usize, Option<(usize, usize)>) {
    let b = stream;
    if b.len() < 9 || b[0] != CONTENT_HANDSHAKE || b[1] != 3 || b[2] > 4 {
        return (0, None);
    }
    let rec_len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    if rec_len == 0 || rec_len > MAX_RECORD || b[5] != HS_CLIENT_HELLO {
        return (0, None);
    }
    let msg_len = (usize::from(b[6]) << 16) | (usize::from(b[7]) << 8) | usize::from(b[8]);
    if msg_len == 0 || msg_len + 4 > rec_len || msg_len + 4 > MAX_CLIENT_HELLO {
        return (0, None);
    }
    let msg_end = 9 + msg_len;
    let avail = b.len().min(msg_end - 1);
    let u8_at = |p: usize| usize::from(b[p]);
    let u16_at = |p: usize| usize::from(u16::from_be_bytes([b[p], b[p + 1]]));
    let mut p = 9;
    // version (2) + random (32)
    if p + 2 > avail {
        return (avail, None);
    }
    if b[p] != 3 {
        return (0, None);
    }
    p += 34;
    // session_id
    if p + 1 > avail {
        return (avail, None);
    }
    let n = u8_at(p);
    if n > 32 {
        return (0, None);
    }
    p += 1 + n;
    // cipher_suites
    if p + 2 > avail {
        return (avail, None);
    }
    let n = u16_at(p);
    if n == 0 || n % 2 != 0 {
        return (0, None);
    }
    p += 2 + n;
    // compression_methods
    if p + 1 > avail {
        return (avail, None);
    }
    let n = u8_at(p);
    if n == 0 {
        return (0, None);
    }
    p += 1 + n;
    if p >= msg_end {
        // No extensions (or lying lengths): the message ends with nothing to wait for.
        return (if p == msg_end { avail } else { 0 }, None);
    }
    // extensions
    if p + 2 > avail {
        return (avail, None);
    }
    if u16_at(p) != msg_end - p - 2 {
        return (0, None);
    }
    p += 2;
    while p < msg_end {
        if p + 4 > avail {
            return (p.min(avail), None);
        }
        let (typ, len) = (u16_at(p) as u16, u16_at(p + 2));
        if p + 4 + len > msg_end {
            return (0, None);
        }
        if typ == EXT_SERVER_NAME {
            let data = (p + 4 + len <= b.len()).then_some((p + 4, p + 4 + len));
            return (p, data);
        }
        if typ == EXT_PADDING {
            let seen = &b[(p + 4).min(avail)..(p + 4 + len).min(avail)];
            if let Some(i) = seen.iter().position(|&x| x != 0) {
                // Not padding: held from the first odd byte on.
                return (p + 4 + i, None);
            }
        }
        p += 4 + len;
        if p > avail {
            return (avail, None);
        }
    }
    (avail, None)
}

fn finish<T>(r: Result<T, &'static str>) -> Progress<T> {
    match r {
        Ok(info) => Progress::Done(info),
        Err(e) => Progress::Invalid(e),
    }
}

/// If `buf` (handshake bytes from the start) holds the whole ClientHello, its body.
fn complete_message(buf: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    let mut r = Reader::new(buf);
    let Some(typ) = r.u8() else { return Ok(None) };
    if typ != HS_CLIENT_HELLO {
        return Err("not a ClientHello");
    }
    let Some(len) = r.u24() else { return Ok(None) };
    let len = len as usize;
    if len + 4 > MAX_CLIENT_HELLO {
        return Err("clienthello too large");
    }
    Ok(r.take(len))
}

/// Parse a ClientHello handshake body (after the 4-byte handshake header). Shared with QUIC,
/// whose CRYPTO frames carry handshake messages without the record layer.
pub fn parse_client_hello(body: &[u8]) -> Result<ClientHelloInfo, &'static str> {
    parse_hello::<Vec<String>>(body).map(|h| ClientHelloInfo {
        sni: h.sni,
        sni_is_ip: h.sni_is_ip,
        alpn: h.alpn,
        ech: h.ech,
    })
}

/// [`parse_client_hello`] with the ALPN names in `A`.
fn parse_hello<A: AlpnOut>(body: &[u8]) -> Result<Hello<A>, &'static str> {
    const SHORT: &str = "truncated ClientHello";
    let mut r = Reader::new(body);
    let version = r.u16().ok_or(SHORT)?;
    if version >> 8 != 3 {
        return Err("bad ClientHello version");
    }
    r.skip(32).ok_or(SHORT)?; // random
    let session_id = r.vec8().ok_or("session_id length overflows")?;
    if session_id.len() > 32 {
        return Err("session_id too long");
    }
    let suites = r.vec16().ok_or("cipher_suites length overflows")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("bad cipher_suites length");
    }
    let compression = r.vec8().ok_or("compression_methods length overflows")?;
    if compression.is_empty() {
        return Err("no compression methods");
    }
    let mut info = Hello::<A>::default();
    if r.is_empty() {
        return Ok(info); // no extensions at all (old clients)
    }
    let mut exts = Reader::new(r.vec16().ok_or("extensions length overflows")?);
    if !r.is_empty() {
        return Err("trailing bytes after extensions");
    }
    let (mut seen_sni, mut seen_alpn) = (false, false);
    while !exts.is_empty() {
        let typ = exts.u16().ok_or("truncated extension header")?;
        let data = exts.vec16().ok_or("extension length overflows")?;
        match typ {
            EXT_SERVER_NAME => {
                if std::mem::replace(&mut seen_sni, true) {
                    return Err("duplicate server_name");
                }
                (info.sni, info.sni_is_ip) = server_name(data)?;
            }
            EXT_ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Err("duplicate ALPN");
                }
                info.alpn = alpn(data)?;
            }
            EXT_ECH | EXT_ESNI => info.ech = true,
            _ => {}
        }
    }
    Ok(info)
}

/// The server_name extension: (`sni`, `sni_is_ip`) as in [`ClientHelloInfo`].
fn server_name(data: &[u8]) -> Result<(Option<String>, bool), &'static str> {
    let mut r = Reader::new(data);
    let mut list = Reader::new(r.vec16().ok_or("server_name_list length overflows")?);
    if !r.is_empty() || list.is_empty() {
        return Err("bad server_name extension");
    }
    let mut host: Option<&[u8]> = None;
    while !list.is_empty() {
        let typ = list.u8().ok_or("truncated server_name")?;
        let name = list.vec16().ok_or("host_name length overflows")?;
        if typ == 0 {
            if host.is_some() {
                return Err("duplicate host_name");
            }
            host = Some(name);
        }
    }
    let Some(host) = host else {
        return Ok((None, false));
    };
    let host = std::str::from_utf8(host).map_err(|_| "server_name not UTF-8")?;
    if is_ip_literal(host) {
        return Ok((None, true));
    }
    let name = natfw_policy::domain::normalize(host).ok_or("server_name not a host name")?;
    Ok((Some(name), false))
}

/// `host` is an IPv4/IPv6 literal (IPv6 with or without brackets).
pub(crate) fn is_ip_literal(host: &str) -> bool {
    // An address is hex digits, dots and colons (IPv4, IPv6, IPv6 with IPv4 in it): anything
    // else is a name, without running the address parsers on it.
    let addr_byte = |b: u8| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'[' | b']');
    if !host.bytes().all(addr_byte) {
        return false;
    }
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse::<IpAddr>().is_ok()
}

fn alpn<A: AlpnOut>(data: &[u8]) -> Result<A, &'static str> {
    let mut r = Reader::new(data);
    let mut list = Reader::new(r.vec16().ok_or("ALPN list length overflows")?);
    if !r.is_empty() || list.is_empty() {
        return Err("bad ALPN extension");
    }
    let mut out = A::default();
    while !list.is_empty() {
        let p = list.vec8().ok_or("ALPN name length overflows")?;
        if p.is_empty() {
            return Err("empty ALPN name");
        }
        out.add(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::testpcap::{synth_hello, tcp_flows};

    fn hello(name: &str) -> Vec<Progress<ClientHelloInfo>> {
        tcp_flows(name)
            .iter()
            .map(|f| client_hello(&f.client_stream))
            .collect()
    }

    fn info(sni: Option<&str>, alpn: &[&str], ech: bool) -> ClientHelloInfo {
        ClientHelloInfo {
            sni: sni.map(str::to_owned),
            sni_is_ip: false,
            alpn: alpn.iter().map(|s| s.to_string()).collect(),
            ech,
        }
    }

    /// The engine's parse says what the full one says, ALPN reduced to the names asked about.
    #[test]
    fn facts_agree_with_client_hello() {
        let mut streams: Vec<Vec<u8>> = Vec::new();
        for name in [
            "https_curl.pcap",
            "https_openssl.pcap",
            "https_chromium.pcap",
            "https_ip_literal.pcap",
            "tls_out_of_order.pcap",
            "tls_malformed_lengths.pcap",
        ] {
            streams.extend(tcp_flows(name).into_iter().map(|f| f.client_stream));
        }
        streams.push(synth_hello(b"198.51.100.10", &[b"imap", b"x"]));
        streams.push(synth_hello(b"a.test", &[b"pop3", b"http/1.0"]));
        for s in &streams {
            for cut in [s.len(), s.len() / 2, 3] {
                let s = &s[..cut.min(s.len())];
                let full = client_hello(s).map(HelloFacts::from);
                assert_eq!(client_hello_facts(s), full);
                let mut once = HelloOnce::new(s);
                assert_eq!(once.get(), &full);
                assert_eq!(once.take(), full);
            }
        }
        let info = client_hello(&synth_hello(b"a.test", &[b"pop3", b"http/1.0"]))
            .done()
            .unwrap();
        let facts = HelloFacts::from(info);
        assert!(facts.alpn.has("pop3") && facts.alpn.has("http/1.0") && !facts.alpn.has("h2"));
    }

    #[test]
    fn curl() {
        let want = info(Some("api.vendor.test"), &["h2", "http/1.1"], false);
        assert_eq!(hello("https_curl.pcap"), vec![Progress::Done(want)]);
    }

    #[test]
    fn openssl_without_alpn() {
        let want = info(Some("updates.vendor.test"), &[], false);
        assert_eq!(hello("https_openssl.pcap"), vec![Progress::Done(want)]);
    }

    #[test]
    fn chromium_two_segments_pq_and_grease_ech() {
        let flows = tcp_flows("https_chromium.pcap");
        assert_eq!(flows.len(), 2);
        let want = info(Some("www.pq.example.test"), &["h2", "http/1.1"], true);
        for f in &flows {
            assert!(f.client_segments >= 2);
            assert_eq!(client_hello(&f.client_stream), Progress::Done(want.clone()));
            // Every strict prefix of the 1927-byte record is undecided, never wrong.
            let record = 5 + 1922;
            for cut in [0, 1, 5, 9, 100, 1448, record - 1] {
                assert_eq!(
                    client_hello(&f.client_stream[..cut]),
                    Progress::NeedMore,
                    "{cut}"
                );
            }
        }
    }

    #[test]
    fn ip_literal_has_no_sni() {
        let got = hello("https_ip_literal.pcap");
        let want = info(None, &["h2", "http/1.1"], false);
        assert_eq!(got, vec![Progress::Done(want)]);
    }

    #[test]
    fn ip_literals() {
        for ip in [
            "198.51.100.10",
            "::1",
            "[::1]",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            assert!(is_ip_literal(ip), "{ip}");
        }
        for name in [
            "cafe",
            "a.test",
            "1.2.3.4.example",
            "[a.test]",
            "1.2.3.4 ",
            "fe80::1%eth0",
        ] {
            assert!(!is_ip_literal(name), "{name}");
        }
    }

    #[test]
    fn ip_literal_in_server_name_is_flagged() {
        let mut ch = synth_hello(b"198.51.100.10", &[]);
        let got = client_hello(&ch).done().unwrap();
        assert!(got.sni_is_ip && got.sni.is_none());
        ch = synth_hello(b"[2001:db8::1]", &[]);
        assert!(client_hello(&ch).done().unwrap().sni_is_ip);
    }

    #[test]
    fn out_of_order_segments_reassembled() {
        let want = info(Some("ooo.vendor.test"), &["http/1.1"], false);
        assert_eq!(hello("tls_out_of_order.pcap"), vec![Progress::Done(want)]);
    }

    #[test]
    fn malformed_lengths_are_invalid() {
        let got = hello("tls_malformed_lengths.pcap");
        assert_eq!(got.len(), 5);
        for g in got {
            assert!(matches!(g, Progress::Invalid(_)), "{g:?}");
        }
    }

    #[test]
    fn fragmented_across_records() {
        let f = &tcp_flows("https_chromium.pcap")[0];
        let msg = &f.client_stream[5..5 + 1926];
        // Re-frame the handshake message as records of 1, 700 and the rest bytes.
        let mut s = Vec::new();
        for part in [&msg[..1], &msg[1..701], &msg[701..]] {
            s.extend_from_slice(&[22, 3, 1]);
            s.extend_from_slice(&(part.len() as u16).to_be_bytes());
            s.extend_from_slice(part);
        }
        let want = info(Some("www.pq.example.test"), &["h2", "http/1.1"], true);
        assert_eq!(client_hello(&s), Progress::Done(want));
        assert_eq!(client_hello(&s[..s.len() - 1]), Progress::NeedMore);
        // An alert record in the middle of the handshake is not a ClientHello.
        let mut bad = s[..6].to_vec();
        bad.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        assert!(matches!(client_hello(&bad), Progress::Invalid(_)));
    }

    /// A ClientHello record with `pad` zero bytes of padding extension before server_name.
    fn padded_hello(host: &[u8], pad: usize) -> (Vec<u8>, usize) {
        let plain = synth_hello(host, &[b"h2"]);
        // synth_hello: 5 record + 4 handshake + 2 + 32 + 7 fixed bytes, then 2 extensions length.
        let ext_start = 5 + 4 + 2 + 32 + 7 + 2;
        let mut exts = vec![0, EXT_PADDING as u8];
        exts.extend_from_slice(&(pad as u16).to_be_bytes());
        exts.extend(std::iter::repeat_n(0u8, pad));
        exts.extend_from_slice(&plain[ext_start..]);
        let mut body = plain[9..ext_start - 2].to_vec();
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
        rec.push(1);
        rec.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        rec.extend_from_slice(&body);
        (rec, ext_start + 4 + pad)
    }

    #[test]
    fn bytes_before_name_stop_at_server_name() {
        let (s, sni_at) = padded_hello(b"padded.example.test", 1000);
        assert_eq!(
            client_hello(&s),
            Progress::Done(info(Some("padded.example.test"), &["h2"], false))
        );
        let mut last = 0;
        for k in 0..=s.len() {
            let n = bytes_before_name(&s[..k]);
            assert!(n <= k && n <= sni_at, "prefix {k}: {n}");
            assert!(n >= last, "monotone at {k}");
            last = n;
        }
        assert_eq!(bytes_before_name(&s[..8]), 0, "headers first");
        assert_eq!(
            bytes_before_name(&s[..100]),
            100,
            "inside the fixed fields and padding"
        );
        assert_eq!(bytes_before_name(&s), sni_at);
        // The name is known as soon as its extension is complete, before the message is.
        let sni_end = sni_at + 9 + "padded.example.test".len();
        assert_eq!(server_name_early(&s[..sni_end - 1]), None);
        let early = server_name_early(&s[..sni_end]).unwrap().unwrap();
        assert_eq!(early.sni.as_deref(), Some("padded.example.test"));
        assert!(matches!(client_hello(&s[..sni_end]), Progress::NeedMore));
        assert_eq!(server_name_early(b"GET / HTTP/1.1\r\n"), None);
        // No padding: the name is the first extension.
        let plain = synth_hello(b"a.test", &[]);
        assert_eq!(bytes_before_name(&plain), 5 + 4 + 2 + 32 + 7 + 2);
        // A padding extension carrying data is held from its first non-zero byte.
        let mut odd = s.clone();
        odd[sni_at - 10] = 0x41;
        assert_eq!(bytes_before_name(&odd), sni_at - 10);
        // Not TLS, or a ClientHello spanning records: nothing.
        assert_eq!(bytes_before_name(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
        let mut spans = s.clone();
        spans[3..5].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(bytes_before_name(&spans), 0);
    }

    #[test]
    fn bytes_before_name_never_the_whole_message() {
        // Without server_name: everything but the last byte of the message, nothing after it.
        let mut s = synth_hello(b"x.test", &[b"h2"]);
        // Turn server_name (type 0) into an unknown extension type.
        let ext_start = 5 + 4 + 2 + 32 + 7 + 2;
        s[ext_start + 1] = 0x7f;
        let end = s.len();
        s.extend_from_slice(b"0-RTT application data");
        assert_eq!(bytes_before_name(&s), end - 1);
        // Chromium's real ClientHello: everything before its server_name extension.
        let f = &tcp_flows("https_chromium.pcap")[0];
        let n = bytes_before_name(&f.client_stream);
        let cs = &f.client_stream;
        assert!(n > 9 && n < cs.len());
        assert_eq!(&cs[n..n + 2], &[0, 0], "stops at an extension of type 0");
        assert!(matches!(client_hello(&cs[..n]), Progress::NeedMore));
    }

    #[test]
    fn too_large_and_not_tls() {
        // Handshake length of 1 MiB: rejected before waiting for it.
        let s = [22, 3, 1, 0x40, 0, 1, 0x10, 0, 0];
        assert_eq!(client_hello(&s), Progress::Invalid("clienthello too large"));
        assert!(matches!(
            client_hello(b"GET / HTTP/1.1\r\n"),
            Progress::Invalid(_)
        ));
        assert_eq!(client_hello(&[22, 3]), Progress::NeedMore);
        assert!(looks_like_tls(&[22, 3, 1]) && !looks_like_tls(b"SSH-"));
        // Endless 1-byte records never exceed the bound.
        let mut s = vec![22, 3, 1, 0, 4, 1, 0, 0x3f, 0];
        for _ in 0..20_000 {
            s.extend_from_slice(&[22, 3, 1, 0, 1, 0]);
        }
        assert!(matches!(
            client_hello(&s),
            Progress::Done(_) | Progress::Invalid(_)
        ));
    }
}
