//! Minimal, bounds-checked header walking for the I/O path: where the IP header starts and what
//! the destination is (next-hop lookup), and completing TCP/UDP checksums.
//!
//! Why completion: veth (and real NICs with offloads on) hand frames to AF_XDP with *partial*
//! L4 checksums (only the pseudo-header sum; the stack expected the device to finish it). The
//! copy into the socket drops that marker, so a forwarded frame must carry a complete checksum
//! or the receiver drops it. Recomputing over the whole segment after the engine's rewrite is
//! correct for partial and full inputs alike.

use std::net::IpAddr;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// One's-complement sum of `data` (as big-endian 16-bit words) added to `acc`.
///
/// Eight bytes at a time, as two 32-bit words: 2^16 ≡ 1 (mod 2^16 - 1), so after [`fold`] a
/// 32-bit word counts like its two 16-bit halves (RFC 1071). This is the per-byte cost of every
/// forwarded frame, so it matters.
pub(crate) fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut wide = data.chunks_exact(8);
    for c in &mut wide {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_be_bytes(w);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut chunks = wide.remainder().chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Recompute the TCP or UDP checksum of the frame in place. Returns `false` when the frame has
/// no checksum this function can complete (not TCP/UDP, an IPv4 fragment, IPv6 extension
/// headers, a UDP/IPv4 datagram sent without checksum, truncated): it is then left unchanged.
pub fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    let Some((o, dst)) = natfw_engine::steer::l3_destination(frame) else {
        return false;
    };
    let (proto, l4_off, l4_len, mut acc) = match dst {
        IpAddr::V4(_) => {
            let Some(&vihl) = frame.get(o) else {
                return false;
            };
            let ihl = usize::from(vihl & 0x0f) * 4;
            let (Some(total), Some(frag), Some(&proto)) =
                (be16(frame, o + 2), be16(frame, o + 6), frame.get(o + 9))
            else {
                return false;
            };
            // MF set or a non-zero offset: the segment is not all here.
            if frag & 0x3fff != 0 || ihl < 20 || usize::from(total) < ihl {
                return false;
            }
            let l4_len = usize::from(total) - ihl;
            let Some(addrs) = frame.get(o + 12..o + 20) else {
                return false;
            };
            let acc = sum(0, addrs) + u64::from(proto) + l4_len as u64;
            (proto, o + ihl, l4_len, acc)
        }
        IpAddr::V6(_) => {
            let (Some(plen), Some(&next)) = (be16(frame, o + 4), frame.get(o + 6)) else {
                return false;
            };
            let Some(addrs) = frame.get(o + 8..o + 40) else {
                return false;
            };
            let l4_len = usize::from(plen);
            let acc = sum(0, addrs) + u64::from(next) + l4_len as u64;
            (next, o + 40, l4_len, acc)
        }
    };
    let csum_at = match proto {
        6 => l4_off + 16,
        17 => l4_off + 6,
        _ => return false,
    };
    let Some(seg) = frame.get_mut(l4_off..l4_off + l4_len) else {
        return false;
    };
    let rel = csum_at - l4_off;
    if rel + 2 > seg.len() {
        return false;
    }
    let is_v4 = dst.is_ipv4();
    if proto == 17 && is_v4 && seg[rel] == 0 && seg[rel + 1] == 0 {
        return false; // UDP over IPv4 without a checksum stays so
    }
    seg[rel] = 0;
    seg[rel + 1] = 0;
    acc = sum(acc, seg);
    let mut c = fold(acc);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    seg[rel..rel + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + UDP "hi" from 10.0.0.1:1000 to 10.0.0.2:2000 with a valid checksum
    /// computed independently (RFC 768 by hand).
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0x03, 0xe8, 0x07, 0xd0, 0, 10, 0, 0, b'h', b'i']);
        f
    }

    #[test]
    fn completes_a_partial_udp_checksum() {
        let mut f = udp_frame();
        // UDP/IPv4 with checksum 0 = "no checksum": left as is.
        assert!(!complete_l4_checksum(&mut f));
        // The partial value veth leaves: the folded pseudo-header sum.
        f[40] = 0x14;
        f[41] = 0x1e;
        assert!(complete_l4_checksum(&mut f));
        // Pseudo header: 0x0a00+0x0001+0x0a00+0x0002+17+10 = 0x141e; UDP: 0x03e8+0x07d0+10+0x6869
        // = 0x742b; total 0x8849 -> !0x8849 = 0x77b6.
        assert_eq!(&f[14 + 20 + 6..14 + 20 + 8], &[0x77, 0xb6]);
        // Idempotent on an already complete checksum.
        assert!(complete_l4_checksum(&mut f));
        assert_eq!(&f[40..42], &[0x77, 0xb6]);
    }

    #[test]
    fn leaves_fragments_and_truncated_frames_alone() {
        let mut f = udp_frame();
        f[14 + 6] = 0x20; // MF
        assert!(!complete_l4_checksum(&mut f));
        let mut t = udp_frame();
        t.truncate(40);
        assert!(!complete_l4_checksum(&mut t));
    }

    /// The wide sum folds to what a plain 16-bit word sum folds to, for every length and
    /// alignment of the tail (odd lengths included).
    #[test]
    fn wide_sum_matches_word_sum() {
        let data: Vec<u8> = (0..1500u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 1499, 1500] {
            let d = &data[..len];
            let mut words = 0u64;
            for (k, b) in d.iter().enumerate() {
                words += u64::from(*b) << if k % 2 == 0 { 8 } else { 0 };
            }
            assert_eq!(fold(sum(0x1234, d)), fold(0x1234 + words), "len {len}");
        }
        let ones = [0xffu8; 64];
        assert_eq!(fold(sum(0, &ones)), fold(32 * 0xffff));
    }
}
