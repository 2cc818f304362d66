//! Internet checksum (RFC 1071), incremental update (RFC 1624) and pseudo-headers.
//!
//! All sums here are one's-complement sums of big-endian 16-bit words. A *sum* is the folded,
//! uncomplemented value; a *checksum* is its complement as stored in a header.

use std::net::IpAddr;

/// Fold a wide accumulator into 16 bits with end-around carry.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Add `data` to an accumulator. Words are taken at even offsets *of `data`*; an odd trailing
/// byte is padded with zero. Summing big-endian u32 chunks is equivalent to summing u16 words
/// once folded, and halves the number of additions.
#[inline]
pub fn accumulate(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_be_bytes(w);
        // Two u32 halves keep the accumulator far from overflow for any 64 KiB input.
        acc += (v >> 32) + (v & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [b] = pairs.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

/// Folded one's-complement sum of `data`.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    fold(accumulate(0, data))
}

/// The checksum to store for `data` (complement of its sum).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Accumulated pseudo-header for TCP/UDP/ICMPv6 (RFC 793, RFC 8200 §8.1). `len` is the L4 length.
/// Mixed families cannot happen for one packet; if given, only `src`'s family is used for both.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: u32) -> u64 {
    let mut acc = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = accumulate(acc, &s.octets());
            acc = accumulate(acc, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = accumulate(acc, &s.octets());
            acc = accumulate(acc, &d.octets());
        }
        (IpAddr::V4(s), IpAddr::V6(_)) => acc = accumulate(acc, &s.octets()),
        (IpAddr::V6(s), IpAddr::V4(_)) => acc = accumulate(acc, &s.octets()),
    }
    acc + u64::from(proto) + u64::from(len >> 16) + u64::from(len & 0xffff)
}

/// Checksum of an L4 segment (TCP, UDP, ICMPv6) including its pseudo-header. The checksum field
/// inside `segment` must be zero (or the caller is verifying: then a valid segment gives 0).
pub fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let acc = pseudo_header(src, dst, proto, segment.len() as u32);
    !fold(accumulate(acc, segment))
}

/// Incremental checksum update (RFC 1624, eqn. 3): accumulates `~old + new` for every rewritten
/// 16-bit word, then applies the difference to any checksum covering those words.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delta(u64);

impl Delta {
    /// An empty difference.
    pub const fn new() -> Self {
        Delta(0)
    }

    /// Record that the words `old` became `new` (same even length, at an even offset of the
    /// checksummed data). `Σ(~m + m')` equals `~Σm + Σm'` in one's-complement arithmetic, which
    /// lets both sides use the chunked [`accumulate`].
    #[inline]
    pub fn add(&mut self, old: &[u8], new: &[u8]) {
        debug_assert_eq!(old.len(), new.len());
        self.0 += u64::from(!fold(accumulate(0, old))) + accumulate(0, new);
    }

    /// Record one rewritten 16-bit word.
    #[inline]
    pub fn add_u16(&mut self, old: u16, new: u16) {
        self.0 += u64::from(!old) + u64::from(new);
    }

    /// Merge another difference into this one.
    #[inline]
    pub fn merge(&mut self, other: Delta) {
        self.0 += other.0;
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The updated checksum for a stored checksum `ck`: `~(~ck + Σ(~m + m'))`.
    #[inline]
    pub fn apply(&self, ck: u16) -> u16 {
        !fold(u64::from(!ck) + self.0)
    }
}

/// Read a big-endian u16 at `off` (caller guarantees bounds via a checked view).
#[inline]
pub(crate) fn get16(buf: &[u8], off: usize) -> Option<u16> {
    let b = buf.get(off..off + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Write a big-endian u16 at `off`; false when out of bounds.
#[inline]
pub(crate) fn put16(buf: &mut [u8], off: usize, v: u16) -> bool {
    match buf.get_mut(off..off + 2) {
        Some(b) => {
            b.copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-wise reference definition (RFC 1071 §4.1).
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            acc += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            i += 2;
        }
        if i < data.len() {
            acc += u32::from(data[i]) << 8;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn matches_reference_for_all_lengths() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(checksum(&data[..n]), reference(&data[..n]), "len {n}");
        }
        let ff = [0xffu8; 1500];
        assert_eq!(checksum(&ff), reference(&ff));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: sum of these words is 0xddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&d), 0xddf2);
    }

    #[test]
    fn incremental_equals_full() {
        let mut data: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8).collect();
        let ck = checksum(&data);
        let old = data[12..16].to_vec();
        let new = [203, 0, 113, 9];
        data[12..16].copy_from_slice(&new);
        let mut d = Delta::new();
        d.add(&old, &new);
        assert_eq!(d.apply(ck), checksum(&data));
    }
}
