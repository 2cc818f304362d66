//! QUIC Initial packets (RFC 9000/9001, and v2 from RFC 9369): remove the Initial protection,
//! which anyone can (the keys derive from the client's Destination Connection ID), reassemble
//! the CRYPTO stream and read the TLS ClientHello in it.
//!
//! Clients may cut the ClientHello into many CRYPTO frames, shuffle them and spread them over
//! several Initial packets and datagrams (Chromium does): [`InitialAssembler`] keeps one flow's
//! CRYPTO bytes, bounded, until the ClientHello is complete.

use std::fmt;
use std::sync::OnceLock;

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Nonce, Tag};
use hkdf::{Hkdf, HkdfExtract};
use sha2::Sha256;

use super::reader::Reader;
use super::tls::{parse_client_hello, MAX_CLIENT_HELLO};
use super::{ClientHelloInfo, Progress};

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 1;
/// QUIC version 2 (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;

/// Most CRYPTO stream bytes buffered per flow.
const MAX_CRYPTO: usize = MAX_CLIENT_HELLO;
/// Most disjoint CRYPTO byte ranges held at once (Chromium sends about a dozen frames).
const MAX_RANGES: usize = 64;
/// Most Initial packets accepted per flow before giving up.
const MAX_INITIALS: u32 = 32;

/// Per-version constants: Initial salt, HKDF labels, long-header type of Initial and Retry.
struct VersionParams {
    salt: [u8; 20],
    key: &'static [u8],
    iv: &'static [u8],
    hp: &'static [u8],
    initial_type: u8,
    retry_type: u8,
}

const V1: VersionParams = VersionParams {
    salt: [
        0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c,
        0xad, 0xcc, 0xbb, 0x7f, 0x0a,
    ],
    key: b"quic key",
    iv: b"quic iv",
    hp: b"quic hp",
    initial_type: 0,
    retry_type: 3,
};

const V2: VersionParams = VersionParams {
    salt: [
        0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d,
        0xcb, 0xf9, 0xbd, 0x2e, 0xd9,
    ],
    key: b"quicv2 key",
    iv: b"quicv2 iv",
    hp: b"quicv2 hp",
    initial_type: 1,
    retry_type: 0,
};

fn params(version: u32) -> Option<&'static VersionParams> {
    match version {
        VERSION_1 => Some(&V1),
        VERSION_2 => Some(&V2),
        _ => None,
    }
}

/// True when `datagram` starts with a long-header Initial packet of QUIC v1 or v2.
pub fn is_long_header_initial(datagram: &[u8]) -> bool {
    let mut r = Reader::new(datagram);
    let (Some(first), Some(version)) = (r.u8(), r.u32()) else {
        return false;
    };
    let Some(p) = params(version) else {
        return false;
    };
    first & 0x80 != 0
        && (first >> 4) & 3 == p.initial_type
        && r.vec8().is_some_and(|dcid| dcid.len() <= 20)
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context, into `out`.
fn expand_label(prk: &Hkdf<Sha256>, label: &[u8], out: &mut [u8]) -> Option<()> {
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    prk.expand_multi_info(&info, out).ok()
}

/// Client Initial packet key, IV and header-protection key derived from the Destination
/// Connection ID (RFC 9001 §5.2, RFC 9369 §3.3).
fn initial_secrets(version: u32, dcid: &[u8]) -> Option<([u8; 16], [u8; 12], [u8; 16])> {
    // The salt's HMAC key schedule is computed once per version (it is a constant).
    static SALTS: [OnceLock<HkdfExtract<Sha256>>; 2] = [OnceLock::new(), OnceLock::new()];
    let p = params(version)?;
    let slot = usize::from(version == VERSION_2);
    let mut extract = SALTS[slot]
        .get_or_init(|| HkdfExtract::new(Some(&p.salt)))
        .clone();
    extract.input_ikm(dcid);
    let (_, initial) = extract.finalize();
    let mut secret = [0u8; 32];
    expand_label(&initial, b"client in", &mut secret)?;
    let client = Hkdf::<Sha256>::from_prk(&secret).ok()?;
    let (mut key, mut iv, mut hp) = ([0u8; 16], [0u8; 12], [0u8; 16]);
    expand_label(&client, p.key, &mut key)?;
    expand_label(&client, p.iv, &mut iv)?;
    expand_label(&client, p.hp, &mut hp)?;
    Some((key, iv, hp))
}

/// The header-protection mask for one sample (RFC 9001 §5.4.3: AES-ECB of the sample).
fn hp_mask(hp: &Aes128, sample: &[u8]) -> Option<[u8; 16]> {
    let mut block: [u8; 16] = sample.try_into().ok()?;
    hp.encrypt_block((&mut block).into());
    Some(block)
}

/// Client Initial keys for one Destination Connection ID.
struct InitialKeys {
    version: u32,
    dcid: [u8; 20],
    dcid_len: usize,
    key: Aes128Gcm,
    iv: [u8; 12],
    hp: Aes128,
}

impl fmt::Debug for InitialKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitialKeys")
            .field("version", &self.version)
            .field("dcid", &&self.dcid[..self.dcid_len])
            .finish_non_exhaustive()
    }
}

impl InitialKeys {
    /// Build the client's Initial keys for one Destination Connection ID.
    fn derive(version: u32, dcid: &[u8]) -> Option<InitialKeys> {
        let (key, iv, hp) = initial_secrets(version, dcid)?;
        let mut id = [0u8; 20];
        id.get_mut(..dcid.len())?.copy_from_slice(dcid);
        Some(InitialKeys {
            version,
            dcid: id,
            dcid_len: dcid.len(),
            key: Aes128Gcm::new(&key.into()),
            iv,
            hp: Aes128::new(&hp.into()),
        })
    }

    fn matches(&self, version: u32, dcid: &[u8]) -> bool {
        self.version == version && self.dcid.get(..self.dcid_len) == Some(dcid)
    }
}

/// Where a flow's ClientHello assembly stands.
#[derive(Debug, Clone)]
enum State {
    Collecting,
    Done(ClientHelloInfo),
    Failed(&'static str),
}

/// Reassembles one flow's client Initial CRYPTO stream up to a complete ClientHello.
///
/// Memory is bounded: at most [`MAX_CLIENT_HELLO`] CRYPTO bytes, 64 disjoint byte ranges and
/// 32 Initial packets; beyond that the flow is `Invalid`. Once `Done` or `Invalid`, every later
/// `push` returns the same result without parsing.
pub struct InitialAssembler {
    keys: Option<InitialKeys>,
    /// CRYPTO stream bytes from offset 0; only the ranges in `have` are meaningful.
    crypto: Vec<u8>,
    /// Received byte ranges, sorted, disjoint and non-adjacent.
    have: Vec<(usize, usize)>,
    /// Decryption buffer, reused across packets.
    scratch: Vec<u8>,
    largest_pn: Option<u64>,
    initials: u32,
    state: State,
}

impl fmt::Debug for InitialAssembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitialAssembler")
            .field("keys", &self.keys)
            .field("have", &self.have)
            .field("initials", &self.initials)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Default for InitialAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl InitialAssembler {
    /// An empty assembler for one flow.
    pub fn new() -> Self {
        InitialAssembler {
            keys: None,
            crypto: Vec::new(),
            have: Vec::new(),
            scratch: Vec::new(),
            largest_pn: None,
            initials: 0,
            state: State::Collecting,
        }
    }

    /// Feed one client→server UDP datagram. Coalesced packets are walked; client Initials are
    /// decrypted and their CRYPTO frames kept; other packet types are skipped.
    pub fn push(&mut self, datagram: &[u8]) -> Progress<ClientHelloInfo> {
        match &self.state {
            State::Done(info) => return Progress::Done(info.clone()),
            State::Failed(e) => return Progress::Invalid(e),
            State::Collecting => {}
        }
        let r = self.push_inner(datagram);
        self.settle(r)
    }

    /// Feed the plaintext payload of an already-decrypted Initial packet (its frames). For
    /// fuzzing the frame walker and CRYPTO reassembly, which random datagrams never reach
    /// through AEAD; the engine uses [`push`](Self::push).
    #[doc(hidden)]
    pub fn push_decrypted_frames(&mut self, payload: &[u8]) -> Progress<ClientHelloInfo> {
        match &self.state {
            State::Done(info) => return Progress::Done(info.clone()),
            State::Failed(e) => return Progress::Invalid(e),
            State::Collecting => {}
        }
        let r = self.frames(payload).and_then(|()| self.client_hello());
        self.settle(r)
    }

    fn settle(
        &mut self,
        r: Result<Option<ClientHelloInfo>, &'static str>,
    ) -> Progress<ClientHelloInfo> {
        match r {
            Ok(None) => Progress::NeedMore,
            Ok(Some(info)) => {
                self.state = State::Done(info.clone());
                self.release();
                Progress::Done(info)
            }
            Err(e) => {
                self.state = State::Failed(e);
                self.release();
                Progress::Invalid(e)
            }
        }
    }

    /// Drop the buffers once the outcome is known.
    fn release(&mut self) {
        self.keys = None;
        self.crypto = Vec::new();
        self.have = Vec::new();
        self.scratch = Vec::new();
    }

    fn push_inner(&mut self, datagram: &[u8]) -> Result<Option<ClientHelloInfo>, &'static str> {
        let mut r = Reader::new(datagram);
        let mut first_packet = true;
        while !r.is_empty() {
            let start = r.pos();
            let b0 = r.u8().ok_or("truncated QUIC header")?;
            if b0 & 0x80 == 0 {
                break; // short header: 1-RTT, the rest of the datagram is that packet
            }
            let version = r.u32().ok_or("truncated QUIC header")?;
            let Some(p) = params(version) else {
                if first_packet {
                    return Err("unsupported QUIC version");
                }
                break;
            };
            first_packet = false;
            let dcid = r.vec8().ok_or("truncated QUIC header")?;
            let scid = r.vec8().ok_or("truncated QUIC header")?;
            if dcid.len() > 20 || scid.len() > 20 {
                return Err("connection ID too long");
            }
            let typ = (b0 >> 4) & 3;
            if typ == p.retry_type {
                break; // a server packet; no length field to skip it by
            }
            if typ == p.initial_type {
                let token_len = r.varint().ok_or("truncated QUIC header")?;
                r.skip(usize::try_from(token_len).map_err(|_| "bad token length")?)
                    .ok_or("token length overflows")?;
            }
            let len = r.varint().ok_or("truncated QUIC header")?;
            let pn_offset = r.pos() - start;
            let len = usize::try_from(len).map_err(|_| "bad packet length")?;
            r.skip(len).ok_or("packet length overflows datagram")?;
            if typ != p.initial_type {
                continue; // 0-RTT or Handshake: skipped
            }
            self.initials += 1;
            if self.initials > MAX_INITIALS {
                return Err("too many Initial packets");
            }
            let packet = &datagram[start..r.pos()];
            self.open_initial(version, dcid, packet, pn_offset)?;
        }
        self.client_hello()
    }

    /// Remove header protection, decrypt, and take the CRYPTO frames of one Initial packet.
    fn open_initial(
        &mut self,
        version: u32,
        dcid: &[u8],
        packet: &[u8],
        pn_offset: usize,
    ) -> Result<(), &'static str> {
        if !self.keys.as_ref().is_some_and(|k| k.matches(version, dcid)) {
            if self.keys.is_some() {
                // A new Destination Connection ID (after a Retry or version negotiation) starts
                // a new connection attempt: its CRYPTO stream restarts at offset 0.
                self.crypto.clear();
                self.have.clear();
                self.largest_pn = None;
            }
            self.keys = Some(InitialKeys::derive(version, dcid).ok_or("key derivation failed")?);
        }
        let Some(keys) = self.keys.as_ref() else {
            return Err("key derivation failed");
        };
        let sample = packet
            .get(pn_offset + 4..pn_offset + 20)
            .ok_or("Initial too short to sample")?;
        let mask = hp_mask(&keys.hp, sample).ok_or("header protection failed")?;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(packet);
        // Long header: the low 4 bits of the first byte are protected (RFC 9001 §5.4.1).
        buf[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(buf[0] & 3) + 1;
        let mut truncated = 0u64;
        for i in 0..pn_len {
            buf[pn_offset + i] ^= mask[1 + i];
            truncated = (truncated << 8) | u64::from(buf[pn_offset + i]);
        }
        let pn = decode_pn(self.largest_pn, truncated, pn_len as u32 * 8);
        let mut nonce = keys.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        let (header, body) = buf.split_at_mut(pn_offset + pn_len);
        let result = match body.len().checked_sub(16) {
            None => Err("undecryptable Initial"),
            Some(text_len) => {
                let (text, tag) = body.split_at_mut(text_len);
                let opened = keys.key.decrypt_in_place_detached(
                    Nonce::from_slice(&nonce),
                    header,
                    text,
                    Tag::from_slice(tag),
                );
                match opened {
                    Ok(()) => {
                        self.largest_pn = Some(self.largest_pn.map_or(pn, |l| l.max(pn)));
                        self.frames(text)
                    }
                    Err(_) => Err("undecryptable Initial"),
                }
            }
        };
        self.scratch = buf;
        result
    }

    fn frames(&mut self, plain: &[u8]) -> Result<(), &'static str> {
        const SHORT: &str = "truncated frame";
        let mut r = Reader::new(plain);
        while let Some(typ) = r.varint() {
            match typ {
                0x00 => {
                    // PADDING runs are long (a 1200-byte datagram is mostly padding).
                    let rest = r.peek_rest();
                    r.skip(rest.iter().position(|&b| b != 0).unwrap_or(rest.len()));
                }
                0x01 => {} // PING
                0x02 | 0x03 => {
                    r.varint().ok_or(SHORT)?; // largest acknowledged
                    r.varint().ok_or(SHORT)?; // delay
                    let ranges = r.varint().ok_or(SHORT)?;
                    r.varint().ok_or(SHORT)?; // first range
                    for _ in 0..ranges {
                        // Each range is at least 2 bytes, so a lying count runs out of input.
                        r.varint().ok_or(SHORT)?;
                        r.varint().ok_or(SHORT)?;
                    }
                    if typ == 0x03 {
                        for _ in 0..3 {
                            r.varint().ok_or(SHORT)?;
                        }
                    }
                }
                0x06 => {
                    let offset = r.varint().ok_or(SHORT)?;
                    let len = r.varint().ok_or(SHORT)?;
                    let data = r
                        .take(usize::try_from(len).map_err(|_| SHORT)?)
                        .ok_or(SHORT)?;
                    self.insert(offset, data)?;
                }
                0x1c | 0x1d => {
                    r.varint().ok_or(SHORT)?; // error code
                    if typ == 0x1c {
                        r.varint().ok_or(SHORT)?; // frame type
                    }
                    let len = r.varint().ok_or(SHORT)?;
                    r.skip(usize::try_from(len).map_err(|_| SHORT)?)
                        .ok_or(SHORT)?;
                }
                _ => return Err("frame not allowed in Initial"),
            }
        }
        if r.is_empty() {
            Ok(())
        } else {
            Err(SHORT)
        }
    }

    /// Add CRYPTO bytes at `offset`. Overlaps must repeat the same bytes (a retransmission);
    /// different bytes are an evasion attempt.
    fn insert(&mut self, offset: u64, data: &[u8]) -> Result<(), &'static str> {
        const TOO_LARGE: &str = "clienthello too large";
        if data.is_empty() {
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(|_| TOO_LARGE)?;
        let end = start.checked_add(data.len()).ok_or(TOO_LARGE)?;
        if end > MAX_CRYPTO {
            return Err(TOO_LARGE);
        }
        for &(s, e) in &self.have {
            let (lo, hi) = (s.max(start), e.min(end));
            if lo < hi && self.crypto[lo..hi] != data[lo - start..hi - start] {
                return Err("conflicting CRYPTO data");
            }
        }
        if self.crypto.len() < end {
            self.crypto.resize(end, 0);
        }
        self.crypto[start..end].copy_from_slice(data);
        // Merge [start, end) into the sorted range list.
        let mut merged = (start, end);
        self.have.retain(|&(s, e)| {
            if e < merged.0 || s > merged.1 {
                true
            } else {
                merged = (merged.0.min(s), merged.1.max(e));
                false
            }
        });
        let at = self.have.partition_point(|&(s, _)| s < merged.0);
        self.have.insert(at, merged);
        if self.have.len() > MAX_RANGES {
            return Err("too many CRYPTO fragments");
        }
        Ok(())
    }

    /// The ClientHello, once the CRYPTO stream holds all of it.
    fn client_hello(&self) -> Result<Option<ClientHelloInfo>, &'static str> {
        let Some(&(0, contiguous)) = self.have.first() else {
            return Ok(None);
        };
        let mut r = Reader::new(&self.crypto[..contiguous]);
        let Some(typ) = r.u8() else { return Ok(None) };
        if typ != 1 {
            return Err("not a ClientHello");
        }
        let Some(len) = r.u24() else { return Ok(None) };
        if len as usize + 4 > MAX_CRYPTO {
            return Err("clienthello too large");
        }
        match r.take(len as usize) {
            Some(body) => parse_client_hello(body).map(Some),
            None => Ok(None),
        }
    }
}

/// Reconstruct a full packet number from its truncated encoding (RFC 9000 §A.3).
fn decode_pn(largest: Option<u64>, truncated: u64, bits: u32) -> u64 {
    let expected = largest.map_or(0, |l| l + 1);
    let win = 1u64 << bits;
    let hwin = win / 2;
    let candidate = (expected & !(win - 1)) | truncated;
    if candidate + hwin <= expected && candidate < (1 << 62) - win {
        candidate + win
    } else if candidate > expected + hwin && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::testpcap::{tcp_flows, udp_datagrams};

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.lines().filter(|l| !l.starts_with('#')).collect();
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    fn rfc_packet() -> Vec<u8> {
        unhex(include_str!("testdata/rfc9001_a2_client_initial.hex"))
    }

    const RFC_DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

    #[test]
    fn initial_keys_match_rfc_vectors() {
        let (k, iv, hp) = initial_secrets(VERSION_1, &RFC_DCID).unwrap();
        assert_eq!(k.to_vec(), unhex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(iv.to_vec(), unhex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(hp.to_vec(), unhex("9f50449e04a0e810283a1e9933adedd2"));
        let (k, iv, hp) = initial_secrets(VERSION_2, &RFC_DCID).unwrap();
        assert_eq!(k.to_vec(), unhex("8b1a0bc121284290a29e0971b5cd045d"));
        assert_eq!(iv.to_vec(), unhex("91f73e2351d8fa91660e909f"));
        assert_eq!(hp.to_vec(), unhex("45b95e15235d6f45a6b19cbcb0294ba9"));
    }

    #[test]
    fn rfc9001_client_initial() {
        let pkt = rfc_packet();
        assert_eq!(pkt.len(), 1200);
        assert!(is_long_header_initial(&pkt));
        let mut a = InitialAssembler::new();
        let want = ClientHelloInfo {
            sni: Some("example.com".into()),
            alpn: vec!["alpn".into()],
            ..Default::default()
        };
        assert_eq!(a.push(&pkt), Progress::Done(want.clone()));
        assert!(
            a.crypto.is_empty() && a.keys.is_none(),
            "released after done"
        );
        assert_eq!(
            a.push(b"junk"),
            Progress::Done(want),
            "terminal state sticks"
        );
    }

    #[test]
    fn aioquic_capture() {
        let client: Vec<Vec<u8>> = udp_datagrams("quic_aioquic.pcap")
            .into_iter()
            .filter(|d| d.0.ip().to_string() == "10.0.1.10")
            .map(|d| d.2)
            .collect();
        assert!(client.len() > 2);
        assert!(is_long_header_initial(&client[0]));
        let mut a = InitialAssembler::new();
        let want = ClientHelloInfo {
            sni: Some("h3.example.test".into()),
            alpn: vec!["h3".into()],
            ..Default::default()
        };
        assert_eq!(a.push(&client[0]), Progress::Done(want));
        // Later 1-RTT datagrams are short-header packets: not Initials.
        assert!(!is_long_header_initial(client.last().unwrap()));
    }

    #[test]
    fn chromium_capture_two_initials_shuffled() {
        // tests/data/captures/quic_chromium.pcap: Debian chromium 156, see capture_quic_chromium.sh.
        let d: Vec<Vec<u8>> = udp_datagrams("captures/quic_chromium.pcap")
            .into_iter()
            .map(|d| d.2)
            .collect();
        assert!(d.len() >= 2 && is_long_header_initial(&d[0]) && is_long_header_initial(&d[1]));
        let mut a = InitialAssembler::new();
        assert_eq!(
            a.push(&d[0]),
            Progress::NeedMore,
            "the ClientHello spans two Initials"
        );
        assert!(
            a.have.len() > 1,
            "out-of-order CRYPTO frames leave holes: {:?}",
            a.have
        );
        let got = a.push(&d[1]).done().expect("ClientHello");
        assert_eq!(got.sni.as_deref(), Some("www.quic.example.test"));
        assert_eq!(got.alpn, ["h3"]);
        assert!(got.ech, "GREASE ECH");
        // Second Initial alone first: still assembles.
        let mut a = InitialAssembler::new();
        assert_eq!(a.push(&d[1]), Progress::NeedMore);
        assert_eq!(a.push(&d[0]), Progress::Done(got.clone()));
        // Retransmissions (PTO probes) after the fact agree or are ignored.
        let mut a = InitialAssembler::new();
        let last = d.iter().map(|x| a.push(x)).last().unwrap();
        assert_eq!(last, Progress::Done(got));
    }

    /// Protect `payload` as a client Initial with a 4-byte packet number (test-only encoder).
    fn protect(version: u32, dcid: &[u8], pn: u32, mut payload: Vec<u8>) -> Vec<u8> {
        let (key, iv, hp) = initial_secrets(version, dcid).unwrap();
        let p = params(version).unwrap();
        let mut pkt = vec![0xc0 | (p.initial_type << 4) | 3];
        pkt.extend_from_slice(&version.to_be_bytes());
        pkt.push(dcid.len() as u8);
        pkt.extend_from_slice(dcid);
        pkt.extend_from_slice(&[0, 0]); // empty SCID, empty token
        pkt.extend_from_slice(&(0x4000 | (4 + payload.len() + 16) as u16).to_be_bytes());
        let pn_off = pkt.len();
        pkt.extend_from_slice(&pn.to_be_bytes());
        let mut nonce = iv;
        for (n, b) in nonce[4..].iter_mut().zip(u64::from(pn).to_be_bytes()) {
            *n ^= b;
        }
        let tag = Aes128Gcm::new(&key.into())
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &pkt, &mut payload)
            .unwrap();
        pkt.extend_from_slice(&payload);
        pkt.extend_from_slice(&tag);
        let mask = hp_mask(&Aes128::new(&hp.into()), &pkt[pn_off + 4..pn_off + 20]).unwrap();
        pkt[0] ^= mask[0] & 0x0f;
        for i in 0..4 {
            pkt[pn_off + i] ^= mask[1 + i];
        }
        pkt
    }

    fn crypto_frame(offset: usize, data: &[u8]) -> Vec<u8> {
        let mut f = vec![6];
        f.extend_from_slice(&(0x4000 | offset as u16).to_be_bytes());
        f.extend_from_slice(&(0x4000 | data.len() as u16).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    /// Chromium's real post-quantum ClientHello (from the TCP capture), as a CRYPTO stream.
    fn chromium_hello() -> Vec<u8> {
        let s = &tcp_flows("https_chromium.pcap")[0].client_stream;
        s[5..5 + 1926].to_vec()
    }

    /// Chromium-style: 12 shuffled CRYPTO frames over two Initial packets.
    fn shuffled_initials(version: u32, dcid: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let msg = chromium_hello();
        let cuts: Vec<usize> = (0..=12).map(|i| i * msg.len() / 12).collect();
        let mut frames: Vec<Vec<u8>> = cuts
            .windows(2)
            .map(|w| crypto_frame(w[0], &msg[w[0]..w[1]]))
            .collect();
        // Deterministic shuffle; the frame holding offset 0 goes to the second packet.
        frames.swap(0, 11);
        frames.swap(3, 7);
        frames.swap(2, 9);
        let mut p1: Vec<u8> = frames[..6].concat();
        p1.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // ACK + PING, as clients send
        let mut p2: Vec<u8> = frames[6..].concat();
        p2.resize(p2.len() + 40, 0); // PADDING
        (protect(version, dcid, 0, p1), protect(version, dcid, 1, p2))
    }

    #[test]
    fn shuffled_crypto_frames_across_two_initials() {
        let want = ClientHelloInfo {
            sni: Some("www.pq.example.test".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
            ech: true,
            ..Default::default()
        };
        for version in [VERSION_1, VERSION_2] {
            let (d1, d2) = shuffled_initials(version, &[0xab; 8]);
            assert!(is_long_header_initial(&d1));
            let mut a = InitialAssembler::new();
            assert_eq!(a.push(&d1), Progress::NeedMore);
            assert!(a.have.len() > 1, "holes remain: {:?}", a.have);
            assert_eq!(
                a.push(&d1),
                Progress::NeedMore,
                "retransmission is harmless"
            );
            assert_eq!(a.push(&d2), Progress::Done(want.clone()));
            // Second packet first, and both coalesced in one datagram.
            let mut a = InitialAssembler::new();
            assert_eq!(a.push(&d2), Progress::NeedMore);
            assert_eq!(a.push(&d1), Progress::Done(want.clone()));
            let mut a = InitialAssembler::new();
            assert_eq!(
                a.push(&[d1.clone(), d2].concat()),
                Progress::Done(want.clone())
            );
        }
    }

    #[test]
    fn hostile_initials() {
        let pkt = rfc_packet();
        let invalid = |d: &[u8]| matches!(InitialAssembler::new().push(d), Progress::Invalid(_));
        let mut flipped = pkt.clone();
        flipped[600] ^= 1;
        assert_eq!(
            InitialAssembler::new().push(&flipped),
            Progress::Invalid("undecryptable Initial")
        );
        assert!(invalid(&pkt[..1000]), "length field overflows the datagram");
        assert!(invalid(&pkt[..30]));
        let mut v = pkt.clone();
        v[1..5].copy_from_slice(&0x0a0a_0a0au32.to_be_bytes());
        assert_eq!(
            InitialAssembler::new().push(&v),
            Progress::Invalid("unsupported QUIC version")
        );
        // Short-header datagram: nothing to learn yet.
        assert_eq!(
            InitialAssembler::new().push(&[0x40, 1, 2, 3]),
            Progress::NeedMore
        );
        assert_eq!(InitialAssembler::new().push(&[]), Progress::NeedMore);
        let dcid = [1u8; 8];
        // CRYPTO beyond the buffer bound.
        let mut far = vec![6, 0x80, 0, 0x40, 0, 1, 0xaa];
        far.resize(64, 0);
        assert_eq!(
            InitialAssembler::new().push(&protect(VERSION_1, &dcid, 0, far)),
            Progress::Invalid("clienthello too large")
        );
        // Overlapping CRYPTO data that disagrees.
        let mut a = InitialAssembler::new();
        let mut f = crypto_frame(10, &[1; 20]);
        f.resize(40, 0);
        assert_eq!(a.push(&protect(VERSION_1, &dcid, 0, f)), Progress::NeedMore);
        let mut g = crypto_frame(20, &[2; 20]);
        g.resize(40, 0);
        assert_eq!(
            a.push(&protect(VERSION_1, &dcid, 1, g)),
            Progress::Invalid("conflicting CRYPTO data")
        );
        // A STREAM frame cannot be in an Initial; a lying ACK range count runs out of bytes.
        assert!(invalid(&protect(VERSION_1, &dcid, 0, vec![0x08; 40])));
        let mut ack = vec![0x02, 0, 0, 0x80, 1, 0, 0x10, 0];
        ack.resize(40, 0);
        assert!(invalid(&protect(VERSION_1, &dcid, 0, ack)));
        // A CRYPTO stream that is not a ClientHello.
        let mut sh = crypto_frame(0, &[2, 0, 0, 4, 3, 3, 0, 0]);
        sh.resize(40, 0);
        assert_eq!(
            InitialAssembler::new().push(&protect(VERSION_1, &dcid, 0, sh)),
            Progress::Invalid("not a ClientHello")
        );
    }

    #[test]
    fn new_dcid_restarts_the_crypto_stream() {
        let (e1, e2) = shuffled_initials(VERSION_1, &[0xcd; 8]);
        let mut a = InitialAssembler::new();
        // A first attempt whose CRYPTO bytes differ from the retried one's...
        let mut first = crypto_frame(200, &[0x55; 30]);
        first.resize(60, 0);
        assert_eq!(
            a.push(&protect(VERSION_1, &[0xab; 8], 0, first)),
            Progress::NeedMore
        );
        // ...then a Retry-style restart with another DCID: not mixed with the old bytes.
        assert_eq!(a.push(&e1), Progress::NeedMore);
        assert!(a.push(&e2).done().is_some());
    }

    #[test]
    fn too_many_fragments() {
        let dcid = [2u8; 8];
        let mut a = InitialAssembler::new();
        let mut last = Progress::NeedMore;
        // One-byte frames with gaps between them.
        for pn in 0..20u32 {
            let mut p = Vec::new();
            for i in 0..8usize {
                p.extend(crypto_frame(2 + 2 * (pn as usize * 8 + i), &[0]));
            }
            last = a.push(&protect(VERSION_1, &dcid, pn, p));
            if last != Progress::NeedMore {
                break;
            }
        }
        assert_eq!(last, Progress::Invalid("too many CRYPTO fragments"));
    }

    #[test]
    fn packet_number_decoding() {
        assert_eq!(decode_pn(Some(0xa82f30ea), 0x9b32, 16), 0xa82f9b32); // RFC 9000 A.3
        assert_eq!(decode_pn(None, 2, 8), 2);
        assert_eq!(decode_pn(Some(255), 0, 8), 256);
    }
}
