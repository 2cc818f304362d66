//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) message views. Both share the layout we need:
//! type, code, checksum, then either echo id/seq or 4 bytes (unused / MTU / pointer) followed
//! by as much of the offending packet as fits.

use super::{be16, be32, WireError};

/// Header length (type, code, checksum, 4 bytes rest-of-header).
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 2;

/// Header fields (offsets and byte ranges from the start of the ICMP/ICMPv6 header).
pub mod field {
    use crate::wire::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = super::CHECKSUM_OFFSET..super::CHECKSUM_OFFSET + 2;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ: Field = 6..8;
    /// "Fragmentation needed" next-hop MTU (ICMPv4, RFC 1191).
    pub const MTU_V4: Field = 6..8;
    /// "Packet too big" MTU (ICMPv6, RFC 4443 §3.2).
    pub const MTU_V6: Field = 4..8;
}

/// ICMPv4 types.
pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Destination-unreachable codes.
    pub const CODE_PORT_UNREACHABLE: u8 = 3;
    pub const CODE_FRAG_NEEDED: u8 = 4;
    pub const CODE_ADMIN_PROHIBITED: u8 = 13;
}

/// ICMPv6 types.
pub mod v6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    /// Destination-unreachable codes.
    pub const CODE_ADMIN_PROHIBITED: u8 = 1;
    pub const CODE_PORT_UNREACHABLE: u8 = 4;
}

/// Whether `typ` is an error message carrying an offending packet.
pub fn is_error(v6: bool, typ: u8) -> bool {
    if v6 {
        matches!(
            typ,
            v6::DEST_UNREACHABLE | v6::PACKET_TOO_BIG | v6::TIME_EXCEEDED | v6::PARAMETER_PROBLEM
        )
    } else {
        matches!(
            typ,
            v4::DEST_UNREACHABLE | v4::TIME_EXCEEDED | v4::PARAMETER_PROBLEM
        )
    }
}

/// A zero-copy view of an ICMP message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Require the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn msg_type(&self) -> u8 {
        self.b()[field::TYPE]
    }
    pub fn code(&self) -> u8 {
        self.b()[field::CODE]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }
    /// Echo identifier (bytes 4..6).
    pub fn echo_ident(&self) -> u16 {
        be16(self.b(), field::ECHO_IDENT)
    }
    /// Echo sequence number (bytes 6..8).
    pub fn echo_seq(&self) -> u16 {
        be16(self.b(), field::ECHO_SEQ)
    }
    /// Next-hop MTU of "fragmentation needed" (v4, bytes 6..8) or "packet too big" (v6, 4..8).
    pub fn mtu(&self, v6: bool) -> u32 {
        let b = self.b();
        if v6 {
            be32(b, field::MTU_V6)
        } else {
            u32::from(be16(b, field::MTU_V4))
        }
    }
    /// Everything after the 8-byte header (echo data or the offending packet).
    pub fn data(&self) -> &[u8] {
        &self.b()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_echo_ident(&mut self, id: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&id.to_be_bytes());
    }
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}
