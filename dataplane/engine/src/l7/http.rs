//! HTTP/1.x request head: method and the normalised target host.

use super::tls::is_ip_literal;
use super::Progress;

/// Largest request head (request line + headers) we wait for.
pub const MAX_HEAD: usize = 8 * 1024;
/// Header slots handed to httparse (on the stack); more headers than this is `Invalid`.
const MAX_HEADERS: usize = 96;

/// What an HTTP request head tells about its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Request method as sent (`GET`, `CONNECT`...).
    pub method: String,
    /// Target host, normalised (lower case, port stripped, trailing dot removed). Taken from an
    /// absolute-form or authority-form request target when present (RFC 9112 §3.2.2: it wins
    /// over Host), else from the Host header. `None` when absent or an IP literal.
    pub host: Option<String>,
    /// The host was an IPv4/IPv6 literal: there is no domain to match.
    pub host_is_ip: bool,
    /// The request asks to switch to HTTP/2 cleartext (`Upgrade: h2c`).
    pub upgrade_h2c: bool,
    /// Bytes of the request head (request line, headers, blank line).
    pub head_len: usize,
}

/// Parse the request head at the start of `stream`, the client's TCP byte stream from its
/// start. `NeedMore` until the blank line ending the head arrives (bounded by [`MAX_HEAD`]).
pub fn request(stream: &[u8]) -> Progress<HttpRequest> {
    let buf = &stream[..stream.len().min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Progress::NeedMore,
        Ok(httparse::Status::Partial) => return Progress::Invalid("request head too large"),
        Err(httparse::Error::TooManyHeaders) => return Progress::Invalid("too many headers"),
        Err(_) => return Progress::Invalid("not an HTTP/1.x request"),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Progress::Invalid("not an HTTP/1.x request");
    };
    let mut host_header: Option<&[u8]> = None;
    let mut upgrade_h2c = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade_h2c |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"));
        }
        if h.name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Progress::Invalid("duplicate Host header");
            }
            host_header = Some(h.value);
        }
    }
    let target_authority = if method.eq_ignore_ascii_case("CONNECT") {
        Some(target)
    } else {
        absolute_authority(target)
    };
    let raw = match (target_authority, host_header) {
        (Some(a), _) => Some(a),
        (None, Some(h)) => match std::str::from_utf8(h) {
            Ok(h) => Some(h.trim()),
            Err(_) => return Progress::Invalid("Host not UTF-8"),
        },
        (None, None) => None,
    };
    let mut out = HttpRequest {
        method: method.to_owned(),
        host: None,
        host_is_ip: false,
        upgrade_h2c,
        head_len,
    };
    if let Some(raw) = raw {
        match authority(raw) {
            Ok((host, is_ip)) => {
                out.host = host;
                out.host_is_ip = is_ip;
            }
            Err(e) => return Progress::Invalid(e),
        }
    }
    Progress::Done(out)
}

/// A Host value or `:authority` (`host`, `host:port`, `[v6]:port`) → (normalised host name, is
/// an IP literal). Empty → no name.
pub fn authority(raw: &str) -> Result<(Option<String>, bool), &'static str> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok((None, false));
    }
    let Some(host) = strip_port(raw) else {
        return Err("bad port in host");
    };
    if is_ip_literal(host) {
        return Ok((None, true));
    }
    match natfw_policy::domain::normalize(host) {
        Some(h) => Ok((Some(h), false)),
        None => Err("host not a host name"),
    }
}

/// The authority of an absolute-form target (`http://user@host:port/path`), userinfo removed.
fn absolute_authority(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..end];
    Some(auth.rsplit_once('@').map_or(auth, |(_, h)| h))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → the host part (brackets kept for IPv6).
/// `None` when the port is not a number.
fn strip_port(authority: &str) -> Option<&str> {
    if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (host, rest) = authority.split_at(close + 1);
        return match rest.strip_prefix(':') {
            None if rest.is_empty() => Some(host),
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(host),
            _ => None,
        };
    }
    match authority.rsplit_once(':') {
        // Several colons without brackets: a bare IPv6 literal, no port.
        Some((h, _)) if h.contains(':') => Some(authority),
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => Some(h),
        Some(_) => None,
        None => Some(authority),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::testpcap::tcp_flows;

    fn host(s: &str) -> Option<String> {
        match request(s.as_bytes()) {
            Progress::Done(r) => r.host,
            p => panic!("{s:?}: {p:?}"),
        }
    }

    #[test]
    fn corpus_requests() {
        for (file, want) in [
            ("http_curl.pcap", "shop.example.test"),
            ("http_8080.pcap", "alt.example.test"),
        ] {
            let flows = tcp_flows(file);
            assert_eq!(flows.len(), 1);
            let s = &flows[0].client_stream;
            let got = request(s).done().expect(file);
            assert_eq!(
                (got.method.as_str(), got.host.as_deref()),
                ("GET", Some(want))
            );
            // Every cut inside the head is undecided.
            let head = s.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            for cut in [0, 1, 3, 10, head - 1] {
                assert_eq!(request(&s[..cut]), Progress::NeedMore, "{file} cut {cut}");
            }
        }
    }

    #[test]
    fn host_forms() {
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: WWW.Example.COM.:8443\r\n\r\n").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            host("GET http://user@Abs.Example/x HTTP/1.1\r\nHost: other.test\r\n\r\n").as_deref(),
            Some("abs.example")
        );
        assert_eq!(
            host("CONNECT tunnel.example:443 HTTP/1.1\r\nHost: tunnel.example:443\r\n\r\n")
                .as_deref(),
            Some("tunnel.example")
        );
        assert_eq!(host("GET / HTTP/1.0\r\n\r\n"), None);
        let r = request(b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n")
            .done()
            .unwrap();
        assert!(r.host_is_ip && r.host.is_none());
        let r = request(b"GET / HTTP/1.1\r\nHost: 198.51.100.10\r\n\r\n")
            .done()
            .unwrap();
        assert!(r.host_is_ip && r.host.is_none());
    }

    #[test]
    fn hostile_requests() {
        let dup = b"GET / HTTP/1.1\r\nHost: a.test\r\nhost: b.test\r\n\r\n";
        assert_eq!(request(dup), Progress::Invalid("duplicate Host header"));
        assert!(matches!(
            request(b"GET / HTTP/1.1\r\nHost: a.test:x\r\n\r\n"),
            Progress::Invalid(_)
        ));
        assert!(matches!(
            request(b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n"),
            Progress::Invalid(_)
        ));
        assert!(matches!(
            request(b"\x16\x03\x01\x02\x00"),
            Progress::Invalid(_)
        ));
        // A head that never ends is cut off at MAX_HEAD.
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 100, b'a');
        assert_eq!(request(&long[..MAX_HEAD - 1]), Progress::NeedMore);
        assert_eq!(request(&long), Progress::Invalid("request head too large"));
    }
}
