//! Ethernet II frames with up to two 802.1Q / 802.1ad (QinQ) tags.

use super::WireError;

/// Ethernet header length without tags.
pub const HEADER_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Tag protocol identifiers: 802.1Q, 802.1ad and the legacy QinQ value.
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;
pub const TPID_QINQ_LEGACY: u16 = 0x9100;
/// At most this many VLAN tags are skipped (QinQ); more is an error, keeping the walk bounded.
pub const MAX_TAGS: usize = 2;
/// Length of one VLAN tag (TPID + TCI).
pub const TAG_LEN: usize = 4;

/// Header fields (byte ranges from the start of the frame).
pub mod field {
    use crate::wire::Field;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    /// Where the EtherType (or the first tag's TPID) starts.
    pub const ETHERTYPE: usize = 12;
}

/// A zero-copy view of an Ethernet frame. `header_len` includes VLAN tags.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
    header_len: usize,
    ethertype: u16,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Validate the header and any VLAN tags.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let (header_len, ethertype) = walk(buffer.as_ref())?;
        Ok(Frame {
            buffer,
            header_len,
            ethertype,
        })
    }

    /// Destination MAC.
    pub fn dst_addr(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        m
    }

    /// Source MAC.
    pub fn src_addr(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        m
    }

    /// The EtherType after any VLAN tags.
    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// Header length including tags.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// VLAN IDs (12 bits) of the tags, outermost first; `None` where absent.
    pub fn vlan_ids(&self) -> [Option<u16>; MAX_TAGS] {
        let b = self.buffer.as_ref();
        let mut out = [None; MAX_TAGS];
        let mut off = field::ETHERTYPE;
        for slot in out.iter_mut() {
            if off + TAG_LEN > self.header_len {
                break;
            }
            *slot = Some(u16::from_be_bytes([b[off + 2], b[off + 3]]) & 0x0fff);
            off += TAG_LEN;
        }
        out
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len..]
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination MAC.
    pub fn set_dst_addr(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac);
    }

    /// Set the source MAC.
    pub fn set_src_addr(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac);
    }
}

/// Header length (tags included) and inner EtherType of `b`.
#[inline]
pub(crate) fn walk(b: &[u8]) -> Result<(usize, u16), WireError> {
    let mut off = field::ETHERTYPE;
    let mut et = match b.get(off..off + 2) {
        Some(x) if b.len() >= HEADER_LEN => u16::from_be_bytes([x[0], x[1]]),
        _ => return Err(WireError::Truncated),
    };
    let mut tags = 0;
    while matches!(et, TPID_8021Q | TPID_8021AD | TPID_QINQ_LEGACY) {
        if tags == MAX_TAGS {
            return Err(WireError::TooManyVlanTags);
        }
        tags += 1;
        off += TAG_LEN;
        et = match b.get(off..off + 2) {
            Some(x) => u16::from_be_bytes([x[0], x[1]]),
            None => return Err(WireError::Truncated),
        };
    }
    Ok((off + 2, et))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qinq_is_walked_and_bounded() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0xc8, 0x08, 0x00]);
        let fr = Frame::new_checked(&f[..]).unwrap();
        assert_eq!(fr.header_len(), 22);
        assert_eq!(fr.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(fr.vlan_ids(), [Some(100), Some(200)]);
        let mut g = vec![0u8; 12];
        g.extend_from_slice(&[0x81, 0, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 0x08, 0]);
        assert_eq!(
            Frame::new_checked(&g[..]).unwrap_err(),
            WireError::TooManyVlanTags
        );
        assert_eq!(
            Frame::new_checked(&g[..15]).unwrap_err(),
            WireError::Truncated
        );
    }
}
