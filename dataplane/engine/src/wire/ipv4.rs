//! IPv4 header view (RFC 791).

use super::checksum;
use super::{be16, be32, WireError};
use std::net::Ipv4Addr;

/// Minimum (option-less) header length.
pub const MIN_HEADER_LEN: usize = 20;

/// Header fields (offsets and byte ranges from the start of the IPv4 header, RFC 791 §3.1).
pub mod field {
    use crate::wire::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    /// Flags (high 3 bits) and fragment offset: two bytes from here.
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    /// Four bytes from here.
    pub const SRC_ADDR: usize = 12;
    /// Four bytes from here.
    pub const DST_ADDR: usize = 16;
}

/// A zero-copy view of an IPv4 packet. The buffer may be longer than the datagram (Ethernet
/// padding); `total_len` says where the datagram ends.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validate version, IHL and total length against the buffer: a total length shorter than
    /// the header or longer than the buffer is an error (a lying length), never trusted.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        let total = usize::from(be16(b, field::LENGTH));
        if ihl < MIN_HEADER_LEN || ihl > b.len() {
            return Err(WireError::BadHeaderLen);
        }
        if total < ihl || total > b.len() {
            return Err(WireError::BadLength);
        }
        Ok(Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Header length in bytes (IHL × 4, options included).
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length of the datagram.
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.b(), field::LENGTH))
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.b(), field::IDENT)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.b()[field::FLAGS_FRAG] & 0x40 != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.b()[field::FLAGS_FRAG] & 0x20 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.b(), field::FLAGS_FRAG..field::FLAGS_FRAG + 2) & 0x1fff) << 3
    }

    /// Whether this is a fragment (MF set or non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    /// Protocol number of the payload.
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }

    /// Stored header checksum.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::from(be32(b, field::SRC_ADDR..field::SRC_ADDR + 4))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::from(be32(b, field::DST_ADDR..field::DST_ADDR + 4))
    }

    /// Whether the header checksum is valid.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.b()[..self.header_len()]) == 0xffff
    }

    /// The header bytes, options included.
    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len()]
    }

    /// The payload, up to the total length (padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Set the source address (checksum not updated).
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.bm()[field::SRC_ADDR..field::SRC_ADDR + 4].copy_from_slice(&a.octets());
    }

    /// Set the destination address (checksum not updated).
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.bm()[field::DST_ADDR..field::DST_ADDR + 4].copy_from_slice(&a.octets());
    }

    /// Set the TTL (checksum not updated).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.bm()[field::TTL] = ttl;
    }

    /// Set the stored checksum.
    pub fn set_checksum(&mut self, ck: u16) {
        self.bm()[field::CHECKSUM].copy_from_slice(&ck.to_be_bytes());
    }

    /// Recompute the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let ck = checksum::checksum(&self.b()[..hl]);
        self.set_checksum(ck);
    }
}

/// Write a minimal 20-byte header (no options, DF clear) into `out[..20]` with a valid checksum.
pub fn emit_header(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    payload_len: usize,
    ttl: u8,
) {
    let total = (MIN_HEADER_LEN + payload_len) as u16;
    out[field::VER_IHL] = 0x45;
    out[field::DSCP_ECN] = 0;
    out[field::LENGTH].copy_from_slice(&total.to_be_bytes());
    out[field::IDENT].copy_from_slice(&[0, 0]);
    out[field::FLAGS_FRAG..field::FLAGS_FRAG + 2].copy_from_slice(&[0x40, 0]);
    out[field::TTL] = ttl;
    out[field::PROTOCOL] = proto;
    out[field::CHECKSUM].copy_from_slice(&[0, 0]);
    out[field::SRC_ADDR..field::SRC_ADDR + 4].copy_from_slice(&src.octets());
    out[field::DST_ADDR..field::DST_ADDR + 4].copy_from_slice(&dst.octets());
    let ck = checksum::checksum(&out[..MIN_HEADER_LEN]);
    out[field::CHECKSUM].copy_from_slice(&ck.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lying_lengths_are_errors() {
        let mut h = [0u8; 40];
        emit_header(
            &mut h,
            Ipv4Addr::new(10, 0, 1, 10),
            Ipv4Addr::new(198, 51, 100, 7),
            6,
            20,
            64,
        );
        let p = Packet::new_checked(&h[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 20);
        assert_eq!(
            Packet::new_checked(&h[..39]).unwrap_err(),
            WireError::BadLength
        );
        let mut short = h;
        short[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&short[..]).unwrap_err(),
            WireError::BadLength
        );
        let mut ihl = h;
        ihl[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&ihl[..]).unwrap_err(),
            WireError::BadHeaderLen
        );
        let mut ihl = h;
        ihl[0] = 0x4f; // 60-byte header in a 40-byte buffer
        assert_eq!(
            Packet::new_checked(&ihl[..]).unwrap_err(),
            WireError::BadHeaderLen
        );
        let mut v = h;
        v[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&v[..]).unwrap_err(),
            WireError::BadVersion
        );
    }
}
