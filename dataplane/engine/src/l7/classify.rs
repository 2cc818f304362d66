//! Application identification from payload, not ports.
//!
//! Each detector looks at the first bytes the client and the server sent and answers yes, no or
//! "could still be". The port only refines TLS into HTTPS/SMTPS/IMAPS/POP3S. Since
//! both directions are given, server-speaks-first protocols (SMTP, FTP, POP3, IMAP, MySQL, SSH)
//! are recognised from the server's greeting.

use natfw_policy::eval::IpProto;
use natfw_policy::App;

use super::{apps, dns, http, quic, tls, ClientHelloInfo, Progress};

/// Bytes of payload after which a flow that matched nothing is `Unknown` (per side; a side that
/// sent this much and still looks like nothing we know will not turn into something).
const ENOUGH: usize = 16;
/// Most bytes a "could still be" detector may wait for before giving up.
const MAX_WAIT: usize = http::MAX_HEAD;

/// One detector's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Yes(App),
    Maybe,
    No,
}

use Verdict::{Maybe, No, Yes};

/// Identify the application of a flow from the first bytes each side sent (`client`: the
/// initiator's TCP stream from its start or its first UDP datagram; `server`: likewise for the
/// responder). `NeedMore` while undecided and more bytes could decide; `Done(App::Unknown)`
/// once payload was seen that matches nothing. Flows that never carry payload stay `NeedMore`
/// (the caller decides what an empty flow is).
pub fn classify(
    proto: IpProto,
    dst_port: Option<u16>,
    client: &[u8],
    server: &[u8],
) -> Progress<App> {
    match proto {
        IpProto::Icmp => Progress::Done(App::Icmp),
        IpProto::Tcp => decide(tcp(dst_port, client, server), client, server),
        IpProto::Udp => decide(udp(client, server), client, server),
        IpProto::Other(_) => Progress::Done(App::Unknown),
    }
}

/// TLS refined by ALPN, then by the destination port.
pub fn classify_tls(info: &ClientHelloInfo, dst_port: Option<u16>) -> App {
    tls_app(|p| info.alpn.iter().any(|a| a == p), dst_port)
}

/// [`classify_tls`] of a ClientHello parsed for the engine.
pub(crate) fn classify_tls_facts(info: &tls::HelloFacts, dst_port: Option<u16>) -> App {
    tls_app(|p| info.alpn.has(p), dst_port)
}

/// `has`: whether the client offers an ALPN name (asked only of [`tls::AlpnSet::NAMES`]).
fn tls_app(has: impl Fn(&str) -> bool, dst_port: Option<u16>) -> App {
    if has("h2") || has("http/1.1") || has("http/1.0") {
        return App::Https;
    }
    if has("imap") {
        return App::Imaps;
    }
    if has("pop3") {
        return App::Pop3s;
    }
    match dst_port {
        Some(443) => App::Https,
        Some(465) => App::Smtps,
        Some(993) => App::Imaps,
        Some(995) => App::Pop3s,
        _ => App::Ssl,
    }
}

fn decide(v: Verdict, client: &[u8], server: &[u8]) -> Progress<App> {
    match v {
        Yes(app) => Progress::Done(app),
        Maybe if client.len().max(server.len()) < MAX_WAIT => Progress::NeedMore,
        No if client.len() < ENOUGH
            && server.len() < ENOUGH
            && (client.is_empty() || server.is_empty()) =>
        {
            Progress::NeedMore
        }
        _ => Progress::Done(App::Unknown),
    }
}

/// Combine detectors: the first yes wins, else any maybe, else no.
fn first(results: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut out = No;
    for r in results {
        match r {
            Yes(_) => return r,
            Maybe => out = Maybe,
            No => {}
        }
    }
    out
}

/// A detector: (destination port, client bytes, server bytes) to a verdict.
pub type Detector = fn(Option<u16>, &[u8], &[u8]) -> Verdict;

/// The TCP detectors, in the order they are asked. Every one is run against every other
/// label's samples in the misclassification tests.
pub const TCP_DETECTORS: [(&str, Detector); 15] = [
    ("tls", |p, c, _| tls_detect(p, c)),
    ("ssh", |_, c, s| ssh(c, s)),
    ("http", |_, c, _| http_detect(c)),
    ("greeting", |_, c, s| greeting(c, s)),
    ("mysql", |_, c, s| mysql(c, s)),
    ("redis", |_, c, _| redis(c)),
    ("rdp", |_, c, _| rdp(c)),
    ("dns", |_, c, _| dns_tcp(c)),
    ("memcache", |_, c, _| apps::memcache(c)),
    ("mqtt", |_, c, _| apps::mqtt(c)),
    ("postgres", |_, c, _| apps::postgres(c)),
    ("mongodb", |_, c, _| apps::mongodb(c)),
    // Server speaks first; the client answers with the same banner.
    ("vnc", |_, c, s| {
        if s.is_empty() {
            if c.is_empty() {
                Maybe
            } else {
                No
            }
        } else {
            apps::vnc(s)
        }
    }),
    ("sip", |_, c, _| apps::sip(c)),
    ("smb", |_, c, _| apps::smb(c)),
];

/// The UDP detectors, in order (QUIC before DNS, NTP before DNS: an NTP request's root delay
/// reads as a DNS question count).
pub const UDP_DETECTORS: [(&str, Detector); 4] = [
    ("quic", |_, c, _| {
        if quic::is_long_header_initial(c) {
            Yes(App::Quic)
        } else {
            No
        }
    }),
    (
        "ntp",
        |_, c, s| {
            if udp_is_ntp(c, s) {
                Yes(App::Ntp)
            } else {
                No
            }
        },
    ),
    ("dns", |_, c, s| {
        if !udp_is_ntp(c, s) && (dns_message(c, false) || dns_message(s, true)) {
            Yes(App::Dns)
        } else {
            No
        }
    }),
    ("sip", |_, c, s| match apps::sip(c) {
        Yes(a) => Yes(a),
        _ => match apps::sip(s) {
            Yes(a) => Yes(a),
            _ => No,
        },
    }),
];

/// NTP-shaped (client mode 3 or symmetric 1, or a server's mode 4) and not a DNS query with a
/// name: an NTP request read as DNS has an empty (root) question name, while a DNS query that
/// happens to have NTP's shape names something.
pub fn udp_is_ntp(client: &[u8], server: &[u8]) -> bool {
    let named = |m: &[u8], response: bool| {
        dns_header(m, response)
            && dns::parse(m).is_ok_and(|d| d.qname.is_some_and(|q| !q.is_empty()))
    };
    ((apps::ntp(client, 3) || apps::ntp(client, 1)) && !named(client, false))
        || (client.is_empty() && apps::ntp(server, 4) && !named(server, true))
}

fn tcp(dst_port: Option<u16>, client: &[u8], server: &[u8]) -> Verdict {
    if client.is_empty() && server.is_empty() {
        return Maybe;
    }
    first(
        TCP_DETECTORS
            .iter()
            .map(|(_, d)| d(dst_port, client, server)),
    )
}

/// [`classify`] of a TCP flow whose client stream comes with its ClientHello parse
/// (`hello.stream()` is the client stream): the same answer, without parsing the ClientHello
/// again when the caller already did or will.
pub(crate) fn classify_tcp(
    dst_port: Option<u16>,
    hello: &mut tls::HelloOnce<'_>,
    server: &[u8],
) -> Progress<App> {
    let client = hello.stream();
    let v = if client.is_empty() && server.is_empty() {
        Maybe
    } else {
        match tls_detect_with(dst_port, hello) {
            y @ Yes(_) => y,
            tls => {
                // As `first`: the TLS detector's maybe counts, the rest are asked in order.
                let rest = first(
                    TCP_DETECTORS[1..]
                        .iter()
                        .map(|(_, d)| d(dst_port, client, server)),
                );
                match (tls, rest) {
                    (_, y @ Yes(_)) => y,
                    (Maybe, _) | (_, Maybe) => Maybe,
                    _ => No,
                }
            }
        }
    };
    decide(v, client, server)
}

fn udp(client: &[u8], server: &[u8]) -> Verdict {
    if client.is_empty() && server.is_empty() {
        return Maybe;
    }
    // A datagram is whole: "could still be" means no.
    match first(UDP_DETECTORS.iter().map(|(_, d)| d(None, client, server))) {
        Yes(a) => Yes(a),
        _ => No,
    }
}

/// `data` starts with `prefix`, or is a (shorter) prefix of it.
fn prefix(data: &[u8], prefix: &[u8]) -> Verdict3 {
    let n = data.len().min(prefix.len());
    if data[..n] != prefix[..n] {
        Verdict3::No
    } else if n == prefix.len() {
        Verdict3::Yes
    } else {
        Verdict3::Maybe
    }
}

/// Prefix comparison result (no application attached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict3 {
    Yes,
    Maybe,
    No,
}

fn tls_detect(dst_port: Option<u16>, client: &[u8]) -> Verdict {
    tls_detect_with(dst_port, &mut tls::HelloOnce::new(client))
}

fn tls_detect_with(dst_port: Option<u16>, hello: &mut tls::HelloOnce<'_>) -> Verdict {
    let client = hello.stream();
    if !tls::looks_like_tls(client) {
        return No;
    }
    if client.len() < 3 {
        return Maybe;
    }
    match hello.get() {
        Progress::Done(info) => Yes(classify_tls_facts(info, dst_port)),
        Progress::NeedMore => Maybe,
        // A TLS record header but a broken ClientHello: still TLS on the wire.
        Progress::Invalid(_) => Yes(classify_tls(&ClientHelloInfo::default(), dst_port)),
    }
}

/// Both SSH peers open with their `SSH-` banner, so one side sending anything else rules it out.
fn ssh(client: &[u8], server: &[u8]) -> Verdict {
    match (prefix(client, b"SSH-"), prefix(server, b"SSH-")) {
        (Verdict3::Yes, _) | (_, Verdict3::Yes) => Yes(App::Ssh),
        (Verdict3::No, _) | (_, Verdict3::No) => No,
        _ => Maybe,
    }
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

fn http_detect(client: &[u8]) -> Verdict {
    match prefix(client, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") {
        Verdict3::Yes => return Yes(App::Http),
        Verdict3::Maybe if !client.is_empty() => return Maybe,
        _ => {}
    }
    let mut verdict = No;
    for m in METHODS {
        match prefix(client, m) {
            Verdict3::Yes => {
                // The request line must end in an HTTP/1.x version.
                let line_end = client.iter().position(|&b| b == b'\n');
                return match line_end {
                    None => Maybe,
                    Some(end) => {
                        let line = client[..end].strip_suffix(b"\r").unwrap_or(&client[..end]);
                        if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
                            Yes(App::Http)
                        } else {
                            No
                        }
                    }
                };
            }
            Verdict3::Maybe if !client.is_empty() => verdict = Maybe,
            _ => {}
        }
    }
    verdict
}

/// Text protocols whose server speaks first: SMTP, FTP (`220`), POP3 (`+OK`), IMAP (`* OK`).
fn greeting(client: &[u8], server: &[u8]) -> Verdict {
    let upper = |s: &[u8]| s.to_ascii_uppercase();
    let client_cmd = |cmds: &[&[u8]]| {
        let c = upper(&client[..client.len().min(5)]);
        cmds.iter().any(|cmd| c.starts_with(cmd))
    };
    if server.is_empty() {
        // The client spoke first: SMTP/FTP/POP3/IMAP clients do not (the greeting would come
        // first), so this is not one of them unless the client bytes are still ambiguous.
        return No;
    }
    match prefix(server, b"220") {
        Verdict3::Yes => {
            let line_end = server
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(server.len());
            let banner = upper(&server[..line_end]);
            let has = |w: &[u8]| banner.windows(w.len()).any(|x| x == w);
            if has(b"SMTP") || client_cmd(&[b"EHLO ", b"HELO ", b"EHLO\r", b"HELO\r"]) {
                return Yes(App::Smtp);
            }
            if has(b"FTP") || client_cmd(&[b"USER ", b"AUTH ", b"FEAT\r"]) {
                return Yes(App::Ftp);
            }
            return if client.len() < 5 { Maybe } else { No };
        }
        Verdict3::Maybe => return Maybe,
        Verdict3::No => {}
    }
    // POP3 commands and IMAP tags start with a letter or digit: a client that sent anything
    // else (a Redis RESP array `*3\r\n...`, answered `+OK`) is neither.
    if client.first().is_some_and(|b| !b.is_ascii_alphanumeric()) {
        return No;
    }
    match (
        prefix(server, b"+OK"),
        prefix(server, b"* OK"),
        prefix(server, b"* PREAUTH"),
    ) {
        (Verdict3::Yes, _, _) => Yes(App::Pop3),
        (_, Verdict3::Yes, _) | (_, _, Verdict3::Yes) => Yes(App::Imap),
        (Verdict3::Maybe, _, _) | (_, Verdict3::Maybe, _) | (_, _, Verdict3::Maybe) => Maybe,
        _ => No,
    }
}

/// MySQL initial handshake packet, protocol version 10: 3-byte little-endian length, sequence
/// 0, 0x0a, then a NUL-terminated printable server version.
/// MySQL clients wait for it, so client bytes before a complete greeting rule it out.
fn mysql(client: &[u8], server: &[u8]) -> Verdict {
    let [l0, l1, l2, seq, proto, rest @ ..] = server else {
        let waiting =
            client.is_empty() && !server.is_empty() && server.get(3).is_none_or(|&s| s == 0);
        return if waiting { Maybe } else { No };
    };
    let len = usize::from(*l0) | usize::from(*l1) << 8 | usize::from(*l2) << 16;
    if *seq != 0 || *proto != 10 || !(20..=1024).contains(&len) {
        return No;
    }
    match rest.iter().position(|&b| b == 0) {
        Some(end) if end > 0 && rest[..end].iter().all(|b| b.is_ascii_graphic()) => Yes(App::MySql),
        None if rest.iter().all(|b| b.is_ascii_graphic()) && rest.len() < 64 => Maybe,
        _ => No,
    }
}

/// RESP: an array of bulk strings (`*2\r\n$3\r\nGET\r\n...`) or an inline `PING`.
fn redis(client: &[u8]) -> Verdict {
    if let Some(rest) = client.strip_prefix(b"*") {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let after = &rest[digits..];
        if digits == 0 || digits > 6 {
            return if rest.is_empty() { Maybe } else { No };
        }
        return match prefix(after, b"\r\n$") {
            Verdict3::Yes => Yes(App::Redis),
            Verdict3::Maybe => Maybe,
            Verdict3::No => No,
        };
    }
    match prefix(client, b"PING\r\n") {
        Verdict3::Yes => Yes(App::Redis),
        Verdict3::Maybe if !client.is_empty() => Maybe,
        _ => No,
    }
}

/// TPKT (version 3) carrying an X.224 Connection Request, as RDP clients open.
fn rdp(client: &[u8]) -> Verdict {
    match client {
        [3, 0, hi, lo, li, code, ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            if (11..=4096).contains(&len) && usize::from(*li) + 5 <= len && *code & 0xf0 == 0xe0 {
                Yes(App::Rdp)
            } else {
                No
            }
        }
        [3] | [3, 0] | [3, 0, _] | [3, 0, _, _] | [3, 0, _, _, _] => Maybe,
        _ => No,
    }
}

/// DNS over TCP: a 2-byte length prefix then a well-formed query.
fn dns_tcp(client: &[u8]) -> Verdict {
    let [hi, lo, msg @ ..] = client else {
        return No;
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    // Queries are small (header + one question + an OPT record); text protocols read as a
    // length prefix give huge values.
    if !(17..=4096).contains(&len) || msg.get(2).is_some_and(|f| f & 0xf8 != 0) {
        return No;
    }
    match msg.get(..len) {
        Some(m) if dns_message(m, false) => Yes(App::Dns),
        Some(_) => No,
        // Wait only while the header so far is plausible.
        None if msg.len() < 12 || dns_header(msg, false) => Maybe,
        None => No,
    }
}

/// A DNS header with the QR bit as given, standard opcode, 1–4 questions.
fn dns_header(m: &[u8], response: bool) -> bool {
    let [_, _, f0, _, q0, q1, ..] = m else {
        return false;
    };
    let qd = u16::from_be_bytes([*q0, *q1]);
    (f0 & 0x80 != 0) == response && (f0 >> 3) & 0xf == 0 && (1..=4).contains(&qd)
}

/// A well-formed DNS message with the QR bit as given and a question name.
pub fn dns_message(m: &[u8], response: bool) -> bool {
    dns_header(m, response) && dns::parse(m).is_ok_and(|d| d.qname.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::testpcap::synth_hello;

    fn tcp(client: &[u8], server: &[u8]) -> Progress<App> {
        classify(IpProto::Tcp, Some(12345), client, server)
    }

    #[test]
    fn crafted_tcp_apps() {
        let cases: [(&[u8], &[u8], App); 14] = [
            (b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", b"", App::Http),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"", App::Http),
            (b"SSH-2.0-OpenSSH_9.2\r\n", b"", App::Ssh),
            (b"", b"SSH-2.0-dropbear\r\n", App::Ssh),
            (b"", b"220 mx.example ESMTP Postfix\r\n", App::Smtp),
            (b"EHLO client\r\n", b"220 mx.example ready\r\n", App::Smtp),
            (b"", b"220 (vsFTPd 3.0.3)\r\n", App::Ftp),
            (b"USER anonymous\r\n", b"220 welcome\r\n", App::Ftp),
            (b"", b"+OK Dovecot ready.\r\n", App::Pop3),
            (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n", App::Imap),
            (
                b"",
                b"\x4a\0\0\0\x0a8.0.36\0\x08\0\0\0abcdefgh\0",
                App::MySql,
            ),
            (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"", App::Redis),
            (b"PING\r\n", b"", App::Redis),
            (
                b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00",
                b"",
                App::Rdp,
            ),
        ];
        for (c, s, app) in cases {
            assert_eq!(
                tcp(c, s),
                Progress::Done(app),
                "{:?} / {:?}",
                String::from_utf8_lossy(c),
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn tls_refined_by_alpn_then_port() {
        let h2 = synth_hello(b"a.test", &[b"h2"]);
        let plain = synth_hello(b"a.test", &[]);
        let imap = synth_hello(b"a.test", &[b"imap"]);
        let c = |p: u16, b: &[u8]| classify(IpProto::Tcp, Some(p), b, b"");
        assert_eq!(c(8443, &h2), Progress::Done(App::Https));
        assert_eq!(c(8443, &plain), Progress::Done(App::Ssl));
        assert_eq!(c(443, &plain), Progress::Done(App::Https));
        assert_eq!(c(465, &plain), Progress::Done(App::Smtps));
        assert_eq!(c(993, &plain), Progress::Done(App::Imaps));
        assert_eq!(c(995, &plain), Progress::Done(App::Pop3s));
        assert_eq!(c(12345, &imap), Progress::Done(App::Imaps));
        assert_eq!(c(443, &h2[..40]), Progress::NeedMore, "partial ClientHello");
    }

    #[test]
    fn classify_tcp_with_a_parse_agrees() {
        let h2 = synth_hello(b"a.test", &[b"h2"]);
        let mut broken = h2.clone();
        broken[9] = 9; // bad ClientHello version: still TLS on the wire
        let clients: [&[u8]; 10] = [
            b"",
            &h2,
            &h2[..2],
            &h2[..40],
            &broken,
            b"GET / HTTP/1.1\r\n",
            b"SSH-2.0-x\r\n",
            b"\x16",
            &[0xde; 64],
            b"EHLO x\r\n",
        ];
        let servers: [&[u8]; 3] = [b"", b"220 mx ESMTP\r\n", b"SSH-2.0-y\r\n"];
        for c in clients {
            for s in servers {
                for port in [None, Some(443), Some(25), Some(8443)] {
                    let want = classify(IpProto::Tcp, port, c, s);
                    let mut hello = tls::HelloOnce::new(c);
                    assert_eq!(classify_tcp(port, &mut hello, s), want, "{c:?} {s:?}");
                    // Whether or not the parse was made before.
                    let mut hello = tls::HelloOnce::new(c);
                    let _ = hello.get();
                    assert_eq!(classify_tcp(port, &mut hello, s), want, "{c:?} {s:?}");
                }
            }
        }
        assert_eq!(
            TCP_DETECTORS[0].0, "tls",
            "classify_tcp asks the TLS detector first"
        );
    }

    #[test]
    fn undecided_and_unknown() {
        assert_eq!(tcp(b"", b""), Progress::NeedMore);
        assert_eq!(tcp(b"GE", b""), Progress::NeedMore);
        assert_eq!(tcp(b"GET / HTT", b""), Progress::NeedMore);
        assert_eq!(tcp(b"SS", b""), Progress::NeedMore);
        assert_eq!(tcp(b"", b"22"), Progress::NeedMore);
        assert_eq!(
            tcp(b"", b"220 hello\r\n"),
            Progress::NeedMore,
            "SMTP or FTP: wait for the client"
        );
        assert_eq!(
            tcp(b"\x00\x01", b""),
            Progress::NeedMore,
            "too little to say"
        );
        assert_eq!(tcp(&[0xde; 64], b""), Progress::Done(App::Unknown));
        assert_eq!(
            tcp(b"hello world, this is not a protocol", b""),
            Progress::Done(App::Unknown)
        );
        assert_eq!(tcp(b"GET / FTP/9\r\n", b"x"), Progress::Done(App::Unknown));
        // An HTTP request line that never ends gives up at the bound.
        let mut long = b"GET /".to_vec();
        long.resize(MAX_WAIT + 1, b'a');
        assert_eq!(tcp(&long, b""), Progress::Done(App::Unknown));
        assert_eq!(
            classify(IpProto::Icmp, None, b"", b""),
            Progress::Done(App::Icmp)
        );
        assert_eq!(
            classify(IpProto::Other(47), None, b"x", b""),
            Progress::Done(App::Unknown)
        );
    }

    #[test]
    fn udp_apps() {
        let u = |c: &[u8], s: &[u8]| classify(IpProto::Udp, Some(9999), c, s);
        let mut ntp_req = vec![0x23];
        ntp_req.resize(48, 0);
        assert_eq!(u(&ntp_req, b""), Progress::Done(App::Ntp));
        let mut q = vec![0xbe, 0xef, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x04shop\x07example\x04test\x00\x00\x01\x00\x01");
        assert_eq!(u(&q, b""), Progress::Done(App::Dns));
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        assert_eq!(
            classify(IpProto::Tcp, Some(53), &framed, b""),
            Progress::Done(App::Dns)
        );
        assert_eq!(u(b"", b""), Progress::NeedMore);
        assert_eq!(u(&[0x55; 100], b""), Progress::Done(App::Unknown));
    }
}
