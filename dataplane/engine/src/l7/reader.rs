//! A bounds-checked cursor over untrusted bytes (in the spirit of rustls' `codec::Reader`).
//!
//! Every accessor returns `None` instead of panicking when the input is too short, so parsers
//! written with `?` cannot index out of bounds.

/// Cursor over a byte slice. Reads advance the cursor; a failed read leaves it unchanged.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The next `n` bytes, or `None` (cursor unchanged) if fewer remain.
    #[inline]
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// A reader over the next `n` bytes (for length-prefixed structures).
    #[inline]
    pub fn sub(&mut self, n: usize) -> Option<Reader<'a>> {
        self.take(n).map(Reader::new)
    }

    /// Skip `n` bytes.
    #[inline]
    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    /// One byte.
    #[inline]
    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Big-endian u16.
    #[inline]
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// Big-endian 24-bit integer.
    #[inline]
    pub fn u24(&mut self) -> Option<u32> {
        self.take(3)
            .map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    /// Big-endian u32.
    #[inline]
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// QUIC variable-length integer (RFC 9000 §16).
    #[inline]
    pub fn varint(&mut self) -> Option<u64> {
        let first = *self.buf.get(self.pos)?;
        let len = 1usize << (first >> 6);
        let b = self.take(len)?;
        let mut v = u64::from(first & 0x3f);
        for &x in &b[1..] {
            v = (v << 8) | u64::from(x);
        }
        Some(v)
    }

    /// A `u8`-length-prefixed vector.
    #[inline]
    pub fn vec8(&mut self) -> Option<&'a [u8]> {
        let save = self.pos;
        let n = self.u8()?;
        self.take(usize::from(n)).or_else(|| {
            self.pos = save;
            None
        })
    }

    /// A `u16`-length-prefixed vector.
    #[inline]
    pub fn vec16(&mut self) -> Option<&'a [u8]> {
        let save = self.pos;
        let n = self.u16()?;
        self.take(usize::from(n)).or_else(|| {
            self.pos = save;
            None
        })
    }

    /// Everything not read yet (consumes it).
    #[inline]
    pub fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        out
    }

    /// Everything not read yet, without consuming it.
    #[inline]
    pub fn peek_rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// Number of unread bytes.
    #[inline]
    pub fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when every byte has been read.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.left() == 0
    }

    /// Bytes read so far (offset into the original slice).
    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::Reader;

    #[test]
    fn reads_and_bounds() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(0x0203));
        assert_eq!(r.u24(), Some(0x040506));
        assert_eq!(r.left(), 4);
        assert_eq!(r.take(5), None, "short read fails");
        assert_eq!(r.left(), 4, "failed read leaves the cursor");
        let mut s = r.sub(2).unwrap();
        assert_eq!(s.rest(), &[7, 8]);
        assert_eq!(r.u32(), None);
        assert_eq!(r.u16(), Some(0x090a));
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
        assert_eq!(r.take(usize::MAX), None);
    }

    #[test]
    fn length_prefixed_vectors() {
        let mut r = Reader::new(&[2, 0xaa, 0xbb, 0, 5, 1]);
        assert_eq!(r.vec8(), Some(&[0xaa, 0xbb][..]));
        assert_eq!(r.vec16(), None, "lying length");
        assert_eq!(r.pos(), 3, "failed vec16 restores the cursor");
    }

    #[test]
    fn quic_varints() {
        // RFC 9000 §A.1 examples.
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, v) in cases {
            assert_eq!(Reader::new(bytes).varint(), Some(v));
        }
        assert_eq!(Reader::new(&[0x7b]).varint(), None);
    }
}
