//! IPv6 header view (RFC 8200) and a bounded extension-header walk.

use super::{be16, WireError};
use std::net::Ipv6Addr;

/// Fixed header length.
pub const HEADER_LEN: usize = 40;

/// Fixed-header fields (offsets and byte ranges from the start of the header, RFC 8200 §3).
pub mod field {
    use crate::wire::Field;
    /// Version, traffic class and flow label: four bytes from here.
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    /// Sixteen bytes from here.
    pub const SRC_ADDR: usize = 8;
    /// Sixteen bytes from here.
    pub const DST_ADDR: usize = 24;
}
/// Extension headers walked before giving up (keeps the walk bounded on hostile chains).
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header values of the extension headers we skip.
pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_AH: u8 = 51;
pub const NH_DEST_OPTS: u8 = 60;
pub const NH_NONE: u8 = 59;

/// A zero-copy view of an IPv6 packet. The buffer may extend past the payload (padding).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validate version and payload length against the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(WireError::BadVersion);
        }
        let plen = usize::from(be16(b, field::PAYLOAD_LEN));
        // Jumbograms (payload length 0 + hop-by-hop option) never occur on our links.
        if HEADER_LEN + plen > b.len() {
            return Err(WireError::BadLength);
        }
        Ok(Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Payload length (extension headers included).
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.b(), field::PAYLOAD_LEN))
    }

    /// Total packet length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// First next-header value.
    pub fn next_header(&self) -> u8 {
        self.b()[field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.b()[field::SRC_ADDR..field::SRC_ADDR + 16])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.b()[field::DST_ADDR..field::DST_ADDR + 16])
    }

    /// The payload (extension headers included), up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.total_len()]
    }

    /// Walk the extension headers: see [`walk_ext`].
    pub fn upper_layer(&self) -> Result<UpperLayer, WireError> {
        walk_ext(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR..field::SRC_ADDR + 16].copy_from_slice(&a.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR..field::DST_ADDR + 16].copy_from_slice(&a.octets());
    }

    /// Set the hop limit.
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = h;
    }
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(b);
    Ipv6Addr::from(o)
}

/// Fragment header contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragHeader {
    /// Offset of the fragment header from the start of the IPv6 payload.
    pub header_offset: usize,
    /// Offset of the next-header byte that names the fragment header (0..40 is the fixed
    /// header's byte 6, expressed here relative to the IPv6 header start).
    pub prev_nh_offset: usize,
    /// Next header after the fragment header.
    pub next_header: u8,
    /// Fragment offset in bytes.
    pub offset: u16,
    /// More fragments.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

/// Result of walking the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol (or 59 / an unknown value where the walk stopped).
    pub proto: u8,
    /// Offset of the upper-layer header from the start of the IPv6 payload.
    pub offset: usize,
    /// The fragment header, if present.
    pub fragment: Option<FragHeader>,
}

/// Skip hop-by-hop, routing, destination-options, AH and fragment headers (at most
/// [`MAX_EXT_HEADERS`]). Headers after a non-first fragment are not walked (they belong to the
/// fragmentable part, which may not be here).
pub fn walk_ext(mut nh: u8, payload: &[u8]) -> Result<UpperLayer, WireError> {
    let mut off = 0usize;
    let mut prev_nh = 6usize;
    let mut fragment = None;
    for _ in 0..=MAX_EXT_HEADERS {
        let len = match nh {
            NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                let l = *payload.get(off + 1).ok_or(WireError::Truncated)?;
                (usize::from(l) + 1) * 8
            }
            NH_AH => {
                let l = *payload.get(off + 1).ok_or(WireError::Truncated)?;
                (usize::from(l) + 2) * 4
            }
            NH_FRAGMENT => {
                if fragment.is_some() {
                    return Err(WireError::BadExtHeader);
                }
                let h = payload.get(off..off + 8).ok_or(WireError::Truncated)?;
                let fo = u16::from_be_bytes([h[2], h[3]]);
                let f = FragHeader {
                    header_offset: off,
                    prev_nh_offset: prev_nh,
                    next_header: h[0],
                    offset: fo & 0xfff8,
                    more: fo & 1 != 0,
                    ident: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                };
                fragment = Some(f);
                if f.offset != 0 {
                    return Ok(UpperLayer {
                        proto: f.next_header,
                        offset: off + 8,
                        fragment,
                    });
                }
                8
            }
            _ => {
                return Ok(UpperLayer {
                    proto: nh,
                    offset: off,
                    fragment,
                })
            }
        };
        if off + len > payload.len() {
            return Err(WireError::Truncated);
        }
        nh = payload[off];
        prev_nh = super::ipv6::HEADER_LEN + off;
        off += len;
    }
    Err(WireError::BadExtHeader)
}

/// Write a 40-byte header into `out[..40]`.
pub fn emit_header(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    payload_len: usize,
    hop_limit: u8,
) {
    out[field::VER_TC_FLOW..field::PAYLOAD_LEN.start].copy_from_slice(&[0x60, 0, 0, 0]);
    out[field::PAYLOAD_LEN].copy_from_slice(&(payload_len as u16).to_be_bytes());
    out[field::NEXT_HEADER] = next_header;
    out[field::HOP_LIMIT] = hop_limit;
    out[field::SRC_ADDR..field::SRC_ADDR + 16].copy_from_slice(&src.octets());
    out[field::DST_ADDR..field::DST_ADDR + 16].copy_from_slice(&dst.octets());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_headers_are_skipped_and_bounded() {
        // hop-by-hop (8) -> dest-opts (16) -> fragment (8) -> UDP
        let mut p = vec![NH_DEST_OPTS, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[NH_FRAGMENT, 1]);
        p.extend_from_slice(&[0; 14]);
        p.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 42]);
        p.extend_from_slice(&[0; 8]);
        let u = walk_ext(NH_HOP_BY_HOP, &p).unwrap();
        assert_eq!(u.proto, 17);
        assert_eq!(u.offset, 32);
        let f = u.fragment.unwrap();
        assert!(f.more);
        assert_eq!(
            (f.offset, f.ident, f.header_offset, f.prev_nh_offset),
            (0, 42, 24, 48)
        );
        assert_eq!(
            walk_ext(NH_HOP_BY_HOP, &p[..20]).unwrap_err(),
            WireError::Truncated
        );
        // A chain of 20 dest-opts headers exceeds the bound.
        let mut chain = Vec::new();
        for _ in 0..20 {
            chain.extend_from_slice(&[NH_DEST_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(
            walk_ext(NH_DEST_OPTS, &chain).unwrap_err(),
            WireError::BadExtHeader
        );
    }
}
