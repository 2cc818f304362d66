//! Capture-file reading for `natfw replay`: classic pcap (both byte orders, µs and ns
//! resolution) and pcapng (SHB/IDB/EPB/SPB/OPB, several sections and interfaces, per-interface
//! `if_tsresol`/`if_tsoffset`). Every frame comes out as an Ethernet frame: RAW IP, IPv4/IPv6,
//! Linux SLL/SLL2 and BSD loopback link types get a synthesized Ethernet header; frames of other
//! link types are skipped and counted.
//!
//! Written by hand rather than with `pcap-file` 2.0 because that crate reads every pcapng
//! timestamp as nanoseconds, whatever the interface's resolution (the default is µs), and panics
//! on some malformed blocks. Input is untrusted: every length is checked, blocks are capped at
//! [`MAX_BLOCK`] bytes, and errors carry the byte offset.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use natfw_engine::time::Timestamp;

/// Largest pcap record or pcapng block accepted (a jumbo frame is 9 KiB; this leaves room for
/// captures of offloaded super-frames without letting a corrupt length allocate gigabytes).
pub const MAX_BLOCK: usize = 1 << 20;

/// Link-layer header types (tcpdump.org LINKTYPE_*) that can be turned into Ethernet.
mod linktype {
    pub const NULL: u16 = 0;
    pub const ETHERNET: u16 = 1;
    pub const RAW: u16 = 101;
    pub const LOOP: u16 = 108;
    pub const LINUX_SLL: u16 = 113;
    pub const IPV4: u16 = 228;
    pub const IPV6: u16 = 229;
    pub const LINUX_SLL2: u16 = 276;
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// One captured frame, as Ethernet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Capture time.
    pub ts: Timestamp,
    /// The frame bytes (possibly shorter than on the wire if the capture had a snap length).
    pub data: Vec<u8>,
    /// Length on the wire.
    pub orig_len: u32,
}

/// Why a capture could not be read.
#[derive(Debug)]
pub enum CaptureError {
    /// Open/read failure.
    Io { path: PathBuf, error: io::Error },
    /// The bytes are not a valid capture at `offset`.
    Format {
        path: PathBuf,
        offset: u64,
        message: String,
    },
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            CaptureError::Format {
                path,
                offset,
                message,
            } => write!(f, "{}: offset {offset}: {message}", path.display()),
        }
    }
}

impl std::error::Error for CaptureError {}

/// Counters of what a reader skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Frames returned.
    pub frames: u64,
    /// Frames on interfaces whose link type cannot be turned into Ethernet.
    pub skipped_linktype: u64,
    /// pcapng blocks of other types (statistics, name resolution, custom, ...).
    pub skipped_blocks: u64,
    /// Frames too short for their link-layer header.
    pub skipped_short: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        }
    }
    fn u32(self, b: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }
}

/// Bounds-checked little cursor over one block.
struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
    e: Endian,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(self.e.u16(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(self.e.u32(self.take(4)?.try_into().ok()?))
    }
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

/// Time resolution: ticks per second and an offset in seconds.
#[derive(Debug, Clone, Copy)]
struct TsRes {
    /// `true`: ticks are 2^-exp s; `false`: 10^-exp s.
    binary: bool,
    exp: u8,
    offset_secs: i64,
}

impl TsRes {
    const MICROS: TsRes = TsRes {
        binary: false,
        exp: 6,
        offset_secs: 0,
    };

    fn to_timestamp(self, ticks: u64) -> Timestamp {
        let per_sec: u128 = if self.binary {
            1u128 << self.exp.min(63)
        } else {
            10u128.pow(u32::from(self.exp.min(19)))
        };
        let ns = u128::from(ticks) * 1_000_000_000 / per_sec;
        let ns = ns as i128 + i128::from(self.offset_secs) * 1_000_000_000;
        Timestamp(ns.clamp(0, i128::from(u64::MAX)) as u64)
    }
}

#[derive(Debug, Clone, Copy)]
struct Iface {
    linktype: u16,
    ts: TsRes,
}

enum Format {
    Pcap {
        e: Endian,
        ts: TsRes,
        linktype: u16,
    },
    PcapNg {
        e: Endian,
        ifaces: Vec<Iface>,
        last_ts: Timestamp,
    },
}

/// A streaming reader over one capture file; yields Ethernet [`Frame`]s in file order.
pub struct CaptureReader<R> {
    input: R,
    path: PathBuf,
    offset: u64,
    format: Format,
    block: Vec<u8>,
    stats: ReadStats,
    failed: bool,
}

impl<R> fmt::Debug for CaptureReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureReader")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Opens a pcap or pcapng file.
pub fn open(path: &Path) -> Result<CaptureReader<BufReader<File>>, CaptureError> {
    let f = File::open(path).map_err(|error| CaptureError::Io {
        path: path.to_owned(),
        error,
    })?;
    CaptureReader::new(BufReader::with_capacity(256 * 1024, f), path)
}

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;

impl<R: Read> CaptureReader<R> {
    /// Reads the file header from `input`; `path` is only used in messages.
    pub fn new(input: R, path: &Path) -> Result<Self, CaptureError> {
        let mut r = CaptureReader {
            input,
            path: path.to_owned(),
            offset: 0,
            format: Format::PcapNg {
                e: Endian::Little,
                ifaces: Vec::new(),
                last_ts: Timestamp(0),
            },
            block: Vec::new(),
            stats: ReadStats::default(),
            failed: false,
        };
        let mut magic = [0u8; 4];
        if !r.read_exact_or_eof(&mut magic)? {
            return Err(r.format_err(0, "empty file, not a pcap or pcapng capture"));
        }
        let le = u32::from_le_bytes(magic);
        let be = u32::from_be_bytes(magic);
        if le == PCAPNG_SHB {
            // The SHB type is a palindrome; its byte order comes from the byte-order magic.
            r.read_shb_body()?;
        } else {
            let (e, nanos) = match (le, be) {
                (PCAP_MAGIC_US, _) => (Endian::Little, false),
                (PCAP_MAGIC_NS, _) => (Endian::Little, true),
                (_, PCAP_MAGIC_US) => (Endian::Big, false),
                (_, PCAP_MAGIC_NS) => (Endian::Big, true),
                _ => {
                    return Err(r.format_err(
                        0,
                        &format!("unknown magic {be:#010x}: not a pcap or pcapng capture"),
                    ))
                }
            };
            let mut hdr = [0u8; 20];
            if !r.read_exact_or_eof(&mut hdr)? {
                return Err(r.format_err(4, "truncated pcap file header"));
            }
            // version(2+2) thiszone(4) sigfigs(4) snaplen(4) network(4): only the link type
            // matters; its upper 16 bits carry FCS flags.
            let linktype = (e.u32([hdr[16], hdr[17], hdr[18], hdr[19]]) & 0xffff) as u16;
            r.format = Format::Pcap {
                e,
                ts: TsRes {
                    binary: false,
                    exp: if nanos { 9 } else { 6 },
                    offset_secs: 0,
                },
                linktype,
            };
        }
        Ok(r)
    }

    /// What was skipped so far.
    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    fn format_err(&self, offset: u64, message: &str) -> CaptureError {
        CaptureError::Format {
            path: self.path.clone(),
            offset,
            message: message.to_string(),
        }
    }

    /// Fills `buf` completely; `Ok(false)` on a clean end of file before the first byte, an
    /// error if the file ends part-way.
    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> Result<bool, CaptureError> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(CaptureError::Io {
                        path: self.path.clone(),
                        error,
                    })
                }
            }
        }
        self.offset += got as u64;
        if got == 0 {
            return Ok(false);
        }
        if got < buf.len() {
            return Err(self.format_err(self.offset, "file ends in the middle of a record"));
        }
        Ok(true)
    }

    /// Reads `len` bytes into the block buffer.
    fn read_block(&mut self, len: usize) -> Result<(), CaptureError> {
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        block.resize(len, 0);
        let ok = len == 0 || self.read_exact_or_eof(&mut block)?;
        self.block = block;
        if !ok {
            return Err(self.format_err(self.offset, "file ends in the middle of a record"));
        }
        Ok(())
    }

    /// Parses a Section Header Block whose type word was just read.
    fn read_shb_body(&mut self) -> Result<(), CaptureError> {
        let mut len = [0u8; 4];
        if !self.read_exact_or_eof(&mut len)? {
            return Err(self.format_err(0, "truncated section header block"));
        }
        self.read_shb_after(len)
    }

    fn next_pcap(
        &mut self,
        e: Endian,
        ts: TsRes,
        linktype: u16,
    ) -> Result<Option<Frame>, CaptureError> {
        loop {
            let start = self.offset;
            let mut hdr = [0u8; 16];
            if !self.read_exact_or_eof(&mut hdr)? {
                return Ok(None);
            }
            let w = |i: usize| e.u32([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
            let (secs, frac, caplen, orig_len) = (w(0), w(4), w(8) as usize, w(12));
            if caplen > MAX_BLOCK {
                return Err(self.format_err(start, &format!("record length {caplen} too large")));
            }
            self.read_block(caplen)?;
            let ticks_per_sec = if ts.exp == 9 {
                1_000_000_000
            } else {
                1_000_000
            };
            let ticks = u64::from(secs) * ticks_per_sec + u64::from(frac);
            if let Some(f) = self.make_frame(linktype, ts.to_timestamp(ticks), orig_len) {
                return Ok(Some(f));
            }
        }
    }

    fn next_pcapng(&mut self) -> Result<Option<Frame>, CaptureError> {
        loop {
            let start = self.offset;
            let mut head = [0u8; 8];
            if !self.read_exact_or_eof(&mut head)? {
                return Ok(None);
            }
            if u32::from_le_bytes([head[0], head[1], head[2], head[3]]) == PCAPNG_SHB {
                // A new section, possibly in the other byte order.
                let rest = [head[4], head[5], head[6], head[7]];
                self.read_shb_after(rest)?;
                continue;
            }
            let Format::PcapNg { e, .. } = self.format else {
                return Ok(None);
            };
            let btype = e.u32([head[0], head[1], head[2], head[3]]);
            let total = e.u32([head[4], head[5], head[6], head[7]]) as usize;
            if total < 12 || !total.is_multiple_of(4) || total > MAX_BLOCK {
                return Err(self.format_err(start, &format!("bad block length {total}")));
            }
            self.read_block(total - 8)?;
            // Body without the trailing length copy.
            let body_len = total - 12;
            match btype {
                1 => self.parse_idb(body_len, start)?,
                6 | 2 | 3 => {
                    if let Some(f) = self.parse_packet_block(btype, body_len, start)? {
                        return Ok(Some(f));
                    }
                }
                _ => self.stats.skipped_blocks += 1,
            }
        }
    }

    /// A Section Header Block after its type word and length: `len_bytes` are the raw length.
    fn read_shb_after(&mut self, len_bytes: [u8; 4]) -> Result<(), CaptureError> {
        let start = self.offset.saturating_sub(8);
        let mut bom = [0u8; 4];
        if !self.read_exact_or_eof(&mut bom)? {
            return Err(self.format_err(start, "truncated section header block"));
        }
        let e = if u32::from_le_bytes(bom) == PCAPNG_BOM {
            Endian::Little
        } else if u32::from_be_bytes(bom) == PCAPNG_BOM {
            Endian::Big
        } else {
            return Err(self.format_err(start + 8, "bad pcapng byte-order magic"));
        };
        let total = e.u32(len_bytes) as usize;
        if total < 28 || !total.is_multiple_of(4) || total > MAX_BLOCK {
            return Err(self.format_err(start, &format!("bad section header length {total}")));
        }
        self.read_block(total - 12)?;
        if let Format::PcapNg { e: fe, ifaces, .. } = &mut self.format {
            *fe = e;
            ifaces.clear();
        }
        Ok(())
    }

    fn parse_idb(&mut self, body_len: usize, start: u64) -> Result<(), CaptureError> {
        let Format::PcapNg { e, ifaces, .. } = &mut self.format else {
            return Ok(());
        };
        let body = self.block.get(..body_len).unwrap_or(&[]);
        let mut c = Cur {
            buf: body,
            pos: 0,
            e: *e,
        };
        let (Some(linktype), Some(_reserved), Some(_snaplen)) = (c.u16(), c.u16(), c.u32()) else {
            return Err(CaptureError::Format {
                path: self.path.clone(),
                offset: start,
                message: "truncated interface description block".into(),
            });
        };
        let mut ts = TsRes::MICROS;
        // Options: code(2) len(2) value padded to 4; ends at opt_endofopt or the body's end.
        while let (Some(code), Some(len)) = (c.u16(), c.u16()) {
            let Some(val) = c.take(usize::from(len)) else {
                break;
            };
            let _ = c.take((4 - usize::from(len) % 4) % 4);
            match (code, val) {
                (0, _) => break,
                (9, [v]) => {
                    ts.binary = v & 0x80 != 0;
                    ts.exp = v & 0x7f;
                }
                (14, v) if v.len() == 8 => {
                    let b: [u8; 8] = v.try_into().unwrap_or_default();
                    ts.offset_secs = match e {
                        Endian::Little => i64::from_le_bytes(b),
                        Endian::Big => i64::from_be_bytes(b),
                    };
                }
                _ => {}
            }
        }
        // More than 2^32 ticks/s or 10^19 is nonsense; clamp to ns-ish instead of overflowing.
        if (ts.binary && ts.exp > 63) || (!ts.binary && ts.exp > 19) {
            return Err(CaptureError::Format {
                path: self.path.clone(),
                offset: start,
                message: format!("unsupported if_tsresol {}", ts.exp),
            });
        }
        ifaces.push(Iface { linktype, ts });
        Ok(())
    }

    fn parse_packet_block(
        &mut self,
        btype: u32,
        body_len: usize,
        start: u64,
    ) -> Result<Option<Frame>, CaptureError> {
        let Format::PcapNg { e, ifaces, last_ts } = &self.format else {
            return Ok(None);
        };
        let body = self.block.get(..body_len).unwrap_or(&[]);
        let mut c = Cur {
            buf: body,
            pos: 0,
            e: *e,
        };
        let trunc = || CaptureError::Format {
            path: self.path.clone(),
            offset: start,
            message: "truncated packet block".into(),
        };
        let (iface_id, ts_ticks, caplen, orig_len) = match btype {
            // Enhanced Packet Block.
            6 => {
                let id = c.u32().ok_or_else(trunc)?;
                let hi = c.u32().ok_or_else(trunc)?;
                let lo = c.u32().ok_or_else(trunc)?;
                let cap = c.u32().ok_or_else(trunc)?;
                let orig = c.u32().ok_or_else(trunc)?;
                (
                    id,
                    Some((u64::from(hi) << 32) | u64::from(lo)),
                    cap as usize,
                    orig,
                )
            }
            // Obsolete Packet Block.
            2 => {
                let id = u32::from(c.u16().ok_or_else(trunc)?);
                let _drops = c.u16().ok_or_else(trunc)?;
                let hi = c.u32().ok_or_else(trunc)?;
                let lo = c.u32().ok_or_else(trunc)?;
                let cap = c.u32().ok_or_else(trunc)?;
                let orig = c.u32().ok_or_else(trunc)?;
                (
                    id,
                    Some((u64::from(hi) << 32) | u64::from(lo)),
                    cap as usize,
                    orig,
                )
            }
            // Simple Packet Block: interface 0, no timestamp, data fills the block.
            _ => {
                let orig = c.u32().ok_or_else(trunc)?;
                let cap = (orig as usize).min(c.rest().len());
                (0, None, cap, orig)
            }
        };
        let Some(iface) = ifaces.get(iface_id as usize).copied() else {
            return Err(CaptureError::Format {
                path: self.path.clone(),
                offset: start,
                message: format!("packet on undeclared interface {iface_id}"),
            });
        };
        let ts = match ts_ticks {
            Some(t) => iface.ts.to_timestamp(t),
            // SPBs carry no time: the best estimate is the previous packet's.
            None => *last_ts,
        };
        let data_start = c.pos;
        if c.take(caplen).is_none() {
            return Err(trunc());
        }
        if let Format::PcapNg { last_ts, .. } = &mut self.format {
            *last_ts = ts;
        }
        // Move the packet bytes to the front so `make_frame` can work on `block[..caplen]`.
        self.block.copy_within(data_start..data_start + caplen, 0);
        self.block.truncate(caplen);
        Ok(self.make_frame(iface.linktype, ts, orig_len))
    }

    /// Turns `self.block` (one frame of `linktype`) into an Ethernet frame; `None` = skipped.
    fn make_frame(&mut self, linktype: u16, ts: Timestamp, orig_len: u32) -> Option<Frame> {
        let data = &self.block;
        let synth = |ethertype: u16, payload: &[u8]| -> Vec<u8> {
            let mut v = Vec::with_capacity(14 + payload.len());
            // Locally administered placeholder MACs: replay does not look at them.
            v.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
            v.extend_from_slice(&ethertype.to_be_bytes());
            v.extend_from_slice(payload);
            v
        };
        let by_version = |p: &[u8]| match p.first().map(|b| b >> 4) {
            Some(4) => Some(ETHERTYPE_IPV4),
            Some(6) => Some(ETHERTYPE_IPV6),
            _ => None,
        };
        let out = match linktype {
            linktype::ETHERNET => {
                if data.len() < 14 {
                    self.stats.skipped_short += 1;
                    return None;
                }
                Some(data.clone())
            }
            linktype::RAW | linktype::IPV4 | linktype::IPV6 => {
                by_version(data).map(|t| synth(t, data))
            }
            linktype::NULL | linktype::LOOP => {
                // 4-byte address family (host order for NULL, big-endian for LOOP): just look
                // at the IP version that follows.
                let p = data.get(4..).unwrap_or(&[]);
                by_version(p).map(|t| synth(t, p))
            }
            linktype::LINUX_SLL => match (data.get(14..16), data.get(16..)) {
                (Some(t), Some(p)) => Some(synth(u16::from_be_bytes([t[0], t[1]]), p)),
                _ => None,
            },
            linktype::LINUX_SLL2 => match (data.get(0..2), data.get(20..)) {
                (Some(t), Some(p)) => Some(synth(u16::from_be_bytes([t[0], t[1]]), p)),
                _ => None,
            },
            _ => {
                self.stats.skipped_linktype += 1;
                return None;
            }
        };
        match out {
            Some(data) => {
                self.stats.frames += 1;
                Some(Frame { ts, data, orig_len })
            }
            None => {
                self.stats.skipped_short += 1;
                None
            }
        }
    }
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<Frame, CaptureError>;

    /// The next frame; after an error the reader stops (a corrupt length leaves no way to find
    /// the next record).
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = match self.format {
            Format::Pcap { e, ts, linktype } => self.next_pcap(e, ts, linktype),
            Format::PcapNg { .. } => self.next_pcapng(),
        };
        match r {
            Ok(f) => f.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
