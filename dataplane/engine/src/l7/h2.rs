//! HTTP/2 over cleartext TCP ("h2c"): the authority of the client's first request, and a watch
//! that keeps every later request of the connection on that authority.
//!
//! With prior knowledge the client opens with the connection preface, its SETTINGS and then a
//! HEADERS frame (continued by CONTINUATION frames until END_HEADERS) whose header block is
//! HPACK-compressed; `:authority` (or `host`) names the destination. After an HTTP/1.1
//! `Upgrade: h2c` the Host of the upgrade request names it and the client's preface follows the
//! server's `101`. Either way a client could open further streams naming another authority on
//! the same connection, so [`H2Watch`] decodes every header block the client sends after the
//! verdict and reports the first one that names a different host.
//!
//! HPACK is decoded by `loona-hpack` (a pure HPACK codec). Bounds: a header block of at most
//! [`MAX_HEADER_BLOCK`] bytes, a dynamic table of at most [`MAX_TABLE_SIZE`] bytes (the
//! protocol's default; a larger size update is an error), at most [`MAX_DECODED`] bytes of
//! decoded names and values per block, and [`MAX_FRAMES_BEFORE_HEADERS`] frames before the
//! first HEADERS.

use loona_hpack::Decoder;

use super::http::{self, HttpRequest};
use super::Progress;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest header block (HEADERS + CONTINUATION payloads) decoded.
pub const MAX_HEADER_BLOCK: usize = 16 * 1024;
/// Largest HPACK dynamic table accepted (SETTINGS_HEADER_TABLE_SIZE's default).
pub const MAX_TABLE_SIZE: usize = 4096;
/// Most bytes of decoded header names and values per block.
pub const MAX_DECODED: usize = 64 * 1024;
/// Frames the client may send before its first HEADERS (SETTINGS, WINDOW_UPDATE, PRIORITY...).
pub const MAX_FRAMES_BEFORE_HEADERS: usize = 16;
/// Largest frame payload without a SETTINGS_MAX_FRAME_SIZE from the server.
const MAX_FRAME: usize = 16_384;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// The stream starts with (a prefix of) the connection preface.
pub fn is_preface_prefix(stream: &[u8]) -> bool {
    let n = stream.len().min(PREFACE.len());
    !stream.is_empty() && stream[..n] == PREFACE[..n]
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

fn frame_header(b: &[u8]) -> Option<Frame> {
    let h = b.get(..9)?;
    Some(Frame {
        len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
        kind: h[3],
        flags: h[4],
        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
    })
}

/// The header block fragment of a HEADERS frame's payload (padding and priority removed).
fn headers_fragment(f: &Frame, payload: &[u8]) -> Result<std::ops::Range<usize>, &'static str> {
    let mut start = 0;
    let mut end = payload.len();
    if f.flags & PADDED != 0 {
        let pad = usize::from(
            *payload
                .first()
                .ok_or("h2: padded HEADERS without pad length")?,
        );
        start += 1;
        end = end
            .checked_sub(pad)
            .ok_or("h2: padding longer than the frame")?;
    }
    if f.flags & PRIORITY_FLAG != 0 {
        start += 5;
    }
    if start > end {
        return Err("h2: HEADERS shorter than its fields");
    }
    Ok(start..end)
}

/// The host a decoded header block names: `:authority`, else `host`; both present and
/// different, or either repeated, is an error (a way to show one name and use another).
#[derive(Debug, Default)]
struct Names {
    authority: Option<Vec<u8>>,
    host: Option<Vec<u8>>,
    method: Option<Vec<u8>>,
    decoded: usize,
    error: Option<&'static str>,
}

impl Names {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.decoded += name.len() + value.len();
        if self.decoded > MAX_DECODED {
            self.error
                .get_or_insert("h2: decoded headers over the bound");
            return;
        }
        let slot = match name {
            b":authority" => &mut self.authority,
            b"host" => &mut self.host,
            b":method" => &mut self.method,
            _ => return,
        };
        if slot.is_some() {
            self.error
                .get_or_insert("h2: repeated :authority, host or :method");
        }
        *slot = Some(value.to_vec());
    }

    /// (normalised host, is an IP literal).
    fn host(&self) -> Result<(Option<String>, bool), &'static str> {
        if let Some(e) = self.error {
            return Err(e);
        }
        fn text(v: &[u8]) -> Result<&str, &'static str> {
            std::str::from_utf8(v).map_err(|_| "h2: authority not UTF-8")
        }
        let a = self
            .authority
            .as_deref()
            .map(text)
            .transpose()?
            .map(http::authority);
        let h = self
            .host
            .as_deref()
            .map(text)
            .transpose()?
            .map(http::authority);
        match (a, h) {
            (Some(a), Some(h)) => {
                let (a, h) = (a?, h?);
                if a != h {
                    return Err("h2: :authority and host differ");
                }
                Ok(a)
            }
            (Some(a), None) => a,
            (None, Some(h)) => h,
            (None, None) => Ok((None, false)),
        }
    }
}

fn decoder() -> Decoder<'static> {
    let mut d = Decoder::new();
    d.set_max_allowed_table_size(MAX_TABLE_SIZE);
    d
}

fn decode(d: &mut Decoder<'static>, block: &[u8]) -> Result<Names, &'static str> {
    let mut names = Names::default();
    d.decode_with_cb(block, |n, v| names.field(&n, &v))
        .map_err(|_| "h2: HPACK decoding error")?;
    Ok(names)
}

/// The client's first request on an HTTP/2 prior-knowledge connection: `stream` is the
/// client's TCP stream from its start (the preface first). `NeedMore` until the first header
/// block is complete.
pub fn request(stream: &[u8]) -> Progress<HttpRequest> {
    let Some(rest) = stream.strip_prefix(PREFACE) else {
        return if stream.is_empty() || is_preface_prefix(stream) {
            Progress::NeedMore
        } else {
            Progress::Invalid("h2: no connection preface")
        };
    };
    let mut pos = 0;
    let mut frames = 0;
    let mut block: Vec<u8> = Vec::new();
    let mut open: Option<u32> = None; // stream of a header block awaiting CONTINUATION
    loop {
        let Some(f) = frame_header(&rest[pos..]) else {
            return Progress::NeedMore;
        };
        if f.len > MAX_FRAME {
            return Progress::Invalid("h2: frame over 16 KiB before the first request");
        }
        let Some(payload) = rest.get(pos + 9..pos + 9 + f.len) else {
            return Progress::NeedMore;
        };
        pos += 9 + f.len;
        frames += 1;
        match (open, f.kind) {
            (Some(s), CONTINUATION) if f.stream == s => {
                if block.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Progress::Invalid("h2: header block over the bound");
                }
                block.extend_from_slice(payload);
            }
            (Some(_), _) => return Progress::Invalid("h2: header block interrupted"),
            (None, HEADERS) => {
                if f.stream == 0 || f.stream % 2 == 0 {
                    return Progress::Invalid("h2: HEADERS on a stream the client cannot open");
                }
                let r = match headers_fragment(&f, payload) {
                    Ok(r) => r,
                    Err(e) => return Progress::Invalid(e),
                };
                block.extend_from_slice(&payload[r]);
                open = Some(f.stream);
            }
            (None, SETTINGS | WINDOW_UPDATE | PRIORITY | PING) => {
                if frames > MAX_FRAMES_BEFORE_HEADERS {
                    return Progress::Invalid("h2: too many frames before the first request");
                }
                continue;
            }
            (None, _) => return Progress::Invalid("h2: unexpected frame before the first request"),
        }
        if f.flags & END_HEADERS != 0 {
            let names = match decode(&mut decoder(), &block) {
                Ok(n) => n,
                Err(e) => return Progress::Invalid(e),
            };
            return match names.host() {
                Ok((host, host_is_ip)) => Progress::Done(HttpRequest {
                    method: String::from_utf8_lossy(names.method.as_deref().unwrap_or(b""))
                        .into_owned(),
                    host,
                    host_is_ip,
                    upgrade_h2c: false,
                    head_len: PREFACE.len() + pos,
                }),
                Err(e) => Progress::Invalid(e),
            };
        }
        if rest.len() - pos > MAX_HEADER_BLOCK + MAX_FRAMES_BEFORE_HEADERS * (MAX_FRAME + 9) {
            return Progress::Invalid("h2: no complete request within the bound");
        }
    }
}

/// What the watch says about the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStep {
    /// Nothing open: the bytes may go.
    Pass,
    /// The bytes end inside a header block: hold them until it is complete.
    InBlock,
    /// A request names another host (or breaks the framing): the connection must not continue.
    Violation(&'static str),
    /// The client did not switch to HTTP/2 after all (no preface after an `Upgrade: h2c`
    /// request): nothing more to watch.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Matching the preface; bytes of it seen so far.
    Preface(usize),
    /// Reading a frame header (bytes in `buf`).
    Header,
    /// Skipping the payload of a frame that carries no headers.
    Skip(usize),
    /// Collecting a HEADERS / CONTINUATION / PUSH_PROMISE payload into `buf`.
    Payload(Frame),
    /// Stopped (violation or not HTTP/2).
    Stopped,
}

/// Decodes every header block a client sends on an h2c connection and checks that each names
/// `expect` (or no host at all). Fed the client's bytes in order.
pub struct H2Watch {
    expect: Option<String>,
    state: State,
    buf: Vec<u8>,
    block: Vec<u8>,
    /// Stream of a header block waiting for CONTINUATION.
    open: Option<u32>,
    hpack: Decoder<'static>,
    /// Header blocks checked.
    pub blocks: u64,
}

impl std::fmt::Debug for H2Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Watch")
            .field("expect", &self.expect)
            .field("state", &self.state)
            .field("blocks", &self.blocks)
            .finish()
    }
}

impl H2Watch {
    /// A watch for a connection decided on `expect` (`None`: the request named no host, so no
    /// later request may name one either). `after_upgrade`: the bytes start after an HTTP/1.1
    /// `Upgrade: h2c` request, where the preface may or may not follow.
    pub fn new(expect: Option<String>) -> Self {
        H2Watch {
            expect,
            state: State::Preface(0),
            buf: Vec::new(),
            block: Vec::new(),
            open: None,
            hpack: decoder(),
            blocks: 0,
        }
    }

    /// Bytes currently kept (partial frame and header block).
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity() + self.block.capacity()
    }

    /// Feed the next client bytes (in stream order).
    pub fn push(&mut self, mut data: &[u8]) -> WatchStep {
        while !data.is_empty() {
            match self.state {
                State::Stopped => return WatchStep::Violation("h2: connection already refused"),
                State::Preface(seen) => {
                    let n = data.len().min(PREFACE.len() - seen);
                    if data[..n] != PREFACE[seen..seen + n] {
                        self.state = State::Stopped;
                        return if seen == 0 {
                            WatchStep::Done
                        } else {
                            WatchStep::Violation("h2: broken connection preface")
                        };
                    }
                    data = &data[n..];
                    self.state = if seen + n == PREFACE.len() {
                        State::Header
                    } else {
                        State::Preface(seen + n)
                    };
                }
                State::Header => {
                    let n = data.len().min(9 - self.buf.len());
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    let Some(f) = frame_header(&self.buf) else {
                        continue;
                    };
                    self.buf.clear();
                    if let Err(e) = self.frame_start(f) {
                        self.state = State::Stopped;
                        return WatchStep::Violation(e);
                    }
                }
                State::Skip(left) => {
                    let n = data.len().min(left);
                    data = &data[n..];
                    self.state = if left == n {
                        State::Header
                    } else {
                        State::Skip(left - n)
                    };
                }
                State::Payload(f) => {
                    let n = data.len().min(f.len - self.buf.len());
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.buf.len() == f.len {
                        if let Err(e) = self.frame_end(f) {
                            self.state = State::Stopped;
                            return WatchStep::Violation(e);
                        }
                        self.state = State::Header;
                    }
                }
            }
        }
        match self.state {
            State::Preface(_) => WatchStep::InBlock,
            State::Payload(_) => WatchStep::InBlock,
            State::Header if self.open.is_some() || !self.buf.is_empty() => WatchStep::InBlock,
            _ => WatchStep::Pass,
        }
    }

    fn frame_start(&mut self, f: Frame) -> Result<(), &'static str> {
        if let Some(s) = self.open {
            if f.kind != CONTINUATION || f.stream != s {
                return Err("h2: header block interrupted");
            }
        }
        match f.kind {
            HEADERS | CONTINUATION | PUSH_PROMISE => {
                if f.len > MAX_FRAME {
                    return Err("h2: header frame over 16 KiB");
                }
                if f.kind == CONTINUATION && self.open.is_none() {
                    return Err("h2: CONTINUATION without a header block");
                }
                self.state = if f.len == 0 {
                    // An empty frame ends (or continues) at once.
                    self.frame_end(f)?;
                    State::Header
                } else {
                    State::Payload(f)
                };
            }
            DATA | PRIORITY | RST_STREAM | SETTINGS | PING | GOAWAY | WINDOW_UPDATE => {
                self.state = if f.len == 0 {
                    State::Header
                } else {
                    State::Skip(f.len)
                };
            }
            // Unknown frame types are ignored by the receiver (RFC 9113 §4.1).
            _ => {
                self.state = if f.len == 0 {
                    State::Header
                } else {
                    State::Skip(f.len)
                };
            }
        }
        Ok(())
    }

    fn frame_end(&mut self, f: Frame) -> Result<(), &'static str> {
        let payload = std::mem::take(&mut self.buf);
        match f.kind {
            HEADERS => {
                let r = headers_fragment(&f, &payload)?;
                self.block.clear();
                self.block.extend_from_slice(&payload[r]);
                self.open = Some(f.stream);
            }
            CONTINUATION => {
                if self.block.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err("h2: header block over the bound");
                }
                self.block.extend_from_slice(&payload);
            }
            // A client must not push; it is a protocol error the server would answer with
            // GOAWAY, but its block would still enter the shared HPACK table.
            _ => return Err("h2: PUSH_PROMISE from a client"),
        }
        if f.flags & END_HEADERS != 0 {
            self.open = None;
            let block = std::mem::take(&mut self.block);
            let names = decode(&mut self.hpack, &block)?;
            self.blocks += 1;
            // No name (or an IP literal) matches no domain rule: nothing to smuggle.
            let (host, _is_ip) = names.host()?;
            let same = match (&host, &self.expect) {
                (None, _) => true,
                (Some(h), Some(e)) => h == e,
                (Some(_), None) => false,
            };
            if !same {
                return Err("h2: a request on the connection names another authority");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::Encoder;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn block(enc: &mut Encoder<'_>, authority: &[u8]) -> Vec<u8> {
        enc.encode(vec![
            (&b":method"[..], &b"GET"[..]),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", authority),
            (b"user-agent", b"test"),
        ])
    }

    fn conn(blocks: &[(u32, Vec<u8>)], split: usize) -> Vec<u8> {
        let mut s = PREFACE.to_vec();
        s.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        s.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]));
        for (stream, b) in blocks {
            let (a, c) = b.split_at(split.min(b.len()));
            if c.is_empty() {
                s.extend(frame(HEADERS, END_HEADERS | 1, *stream, a));
            } else {
                s.extend(frame(HEADERS, 1, *stream, a));
                s.extend(frame(CONTINUATION, END_HEADERS, *stream, c));
            }
        }
        s
    }

    #[test]
    fn authority_from_headers_with_continuation() {
        let mut enc = Encoder::new();
        let b = block(&mut enc, b"H2.Example.Test:8080");
        for split in [1, 3, b.len()] {
            let s = conn(&[(1, b.clone())], split);
            let r = request(&s).done().expect("parsed");
            assert_eq!(r.host.as_deref(), Some("h2.example.test"));
            assert_eq!(r.method, "GET");
            for cut in [0, 10, PREFACE.len() + 3, s.len() - 1] {
                assert_eq!(request(&s[..cut]), Progress::NeedMore, "cut {cut}");
            }
        }
    }

    #[test]
    fn conflicting_or_bad_blocks_are_invalid() {
        let mut enc = Encoder::new();
        let b = enc.encode(vec![
            (&b":method"[..], &b"GET"[..]),
            (b":authority", b"a.test"),
            (b"host", b"b.test"),
        ]);
        assert!(matches!(
            request(&conn(&[(1, b)], 99)),
            Progress::Invalid(_)
        ));
        // Interrupted header block.
        let mut s = PREFACE.to_vec();
        s.extend(frame(HEADERS, 0, 1, &[0x82]));
        s.extend(frame(PING, 0, 0, &[0; 8]));
        assert!(matches!(request(&s), Progress::Invalid(_)));
        // Even stream id.
        let mut s = PREFACE.to_vec();
        s.extend(frame(HEADERS, END_HEADERS, 2, &[0x82]));
        assert!(matches!(request(&s), Progress::Invalid(_)));
        // Table size update over the bound.
        let mut s = PREFACE.to_vec();
        s.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0x3f, 0xe1, 0xff, 0x03, 0x82],
        ));
        assert!(matches!(request(&s), Progress::Invalid(_)));
        assert!(matches!(
            request(b"GET / HTTP/1.1\r\n"),
            Progress::Invalid(_)
        ));
    }

    #[test]
    fn watch_catches_a_second_authority_in_any_split() {
        let mut enc = Encoder::new();
        let b1 = block(&mut enc, b"ok.test");
        let b2 = block(&mut enc, b"ok.test");
        let b3 = block(&mut enc, b"evil.test");
        let good = conn(&[(1, b1.clone()), (3, b2.clone())], 4);
        let bad = conn(&[(1, b1), (3, b2), (5, b3)], 4);
        for step in [1, 7, 64, 4096] {
            let mut w = H2Watch::new(Some("ok.test".into()));
            let mut last = WatchStep::Pass;
            for c in good.chunks(step) {
                last = w.push(c);
                assert!(!matches!(last, WatchStep::Violation(_)), "step {step}");
            }
            assert_eq!(last, WatchStep::Pass);
            assert_eq!(w.blocks, 2);
            let mut w = H2Watch::new(Some("ok.test".into()));
            let v = bad
                .chunks(step)
                .map(|c| w.push(c))
                .find(|v| matches!(v, WatchStep::Violation(_)));
            assert!(v.is_some(), "step {step}: smuggled authority passed");
        }
        // Not HTTP/2 after the upgrade request: nothing to watch.
        let mut w = H2Watch::new(Some("ok.test".into()));
        assert_eq!(w.push(b"GET / HTTP/1.1\r\n"), WatchStep::Done);
    }
}
