//! AF_XDP I/O with xdpilone: one UMEM shared by the inside and outside sockets, the rings, and
//! the forwarding loop (rx → [`FrameHandler`] → tx on the other side).
//!
//! Why xdpilone 1.3.0: maintained, pure Rust (no libbpf/libxdp C dependency to build or ship),
//! and it works in copy mode on veth here (docs/PLATFORM.md). Its sequence is: mmap an
//! area → `Umem::new`; per interface `Socket::with_shared` (first) / `Socket::new` (second) →
//! `fq_cq` → `rx_tx` → `map_rx`/`map_tx` → `Umem::bind`; the socket fd then goes into the
//! interface's XSKMAP. Sharing one UMEM lets a received frame be transmitted on the other
//! interface without a copy.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig};

use crate::neigh::NextHops;
use crate::xdp::IfSide;
use natfw_engine::steer::l3_destination;
use natfw_engine::time::Timestamp;

/// Frames per interface ring (fill, completion, rx, tx).
const RING: u32 = 2048;
/// Bytes per UMEM frame: one page half; a 1514-byte frame plus kernel headroom fits.
const FRAME: u32 = 2048;
/// UMEM frames: enough for every ring of both interfaces with room to spare (frames sit in the
/// idle direction's fill ring).
const FRAMES: u32 = 16 * 1024;
/// Frames handled per ring per loop turn.
const BATCH: u32 = 64;
/// How many TX kicks one flush may take (copy mode moves at most 32 frames per kick).
const MAX_KICKS: u32 = 256;

/// What the handler did with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Rewritten in place: send it out of the other interface.
    Forward,
    /// Dropped or kept by the handler (held payload is copied): the frame can be reused.
    Consumed,
    /// The kernel should have it; a steered frame cannot go back, so it is dropped and counted
    /// (the XDP program passes what the engine would give the kernel).
    ToKernel,
}

/// The packet processor the loop drives (the engine, behind an adapter in `run`).
pub trait FrameHandler {
    fn handle(&mut self, now: Timestamp, side: IfSide, frame: &mut [u8]) -> Disposition;
    /// Frames to send that did not arrive as one (released held payload, RSTs, ICMP).
    fn take_emits(&mut self, out: &mut Vec<(IfSide, Vec<u8>)>);
    /// Called about every `tick` interval of [`AfXdp::run`] (timeouts), with the I/O counters.
    fn tick(&mut self, now: Timestamp, io: &IoStats);
}

/// Counters of the I/O layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Frames received, per side (inside, outside).
    pub rx: [u64; 2],
    /// Frames put on the TX ring, per side.
    pub tx: [u64; 2],
    /// Received frames sent out of the other side.
    pub forwarded: u64,
    /// Received frames dropped or kept (copied) by the handler.
    pub consumed: u64,
    /// Received frames the handler meant for the kernel: dropped (cannot go back).
    pub to_kernel_dropped: u64,
    /// Frames the handler originated (released payload, RSTs, ICMP) that were sent.
    pub emitted: u64,
    /// Frames dropped while the next hop's MAC was being resolved.
    pub no_neighbour: u64,
    /// Frames larger than the outgoing MTU or a UMEM frame, dropped (no ICMP
    /// fragmentation-needed / packet-too-big is sent yet).
    pub too_big: u64,
    /// Flushes that found the TX ring full: the frames left over waited for the next turn
    /// (they are kept, not dropped).
    pub tx_ring_full: u64,
    /// Emits dropped because no UMEM frame was free.
    pub no_free_frame: u64,
    /// Descriptors outside the UMEM or frames without an IP header, dropped.
    pub bad_desc: u64,
}

impl IoStats {
    /// Add another packet worker's counters (every field named: none can be forgotten).
    pub fn accumulate(&mut self, o: &IoStats) {
        let IoStats {
            rx,
            tx,
            forwarded,
            consumed,
            to_kernel_dropped,
            emitted,
            no_neighbour,
            too_big,
            tx_ring_full,
            no_free_frame,
            bad_desc,
        } = o;
        for i in 0..2 {
            self.rx[i] += rx[i];
            self.tx[i] += tx[i];
        }
        self.forwarded += forwarded;
        self.consumed += consumed;
        self.to_kernel_dropped += to_kernel_dropped;
        self.emitted += emitted;
        self.no_neighbour += no_neighbour;
        self.too_big += too_big;
        self.tx_ring_full += tx_ring_full;
        self.no_free_frame += no_free_frame;
        self.bad_desc += bad_desc;
    }
}

/// Errors setting up sockets.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    #[error("mmap of {0} bytes for the UMEM failed: {1}")]
    Mmap(usize, std::io::Error),
    #[error("AF_XDP {what} on {iface}: {err}")]
    Xsk {
        iface: String,
        what: &'static str,
        err: String,
    },
    #[error("interface {0}: {1}")]
    Iface(String, std::io::Error),
}

/// An interface as the loop sees it.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub name: String,
    pub side: IfSide,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The interface's own addresses (source of ICMP errors the gateway sends).
    pub addrs: Vec<IpAddr>,
    /// The device the AF_XDP socket binds to: the interface itself (classic mode) or the XDP
    /// end of its slow-path veth pair (split mode). MACs, MTU and next hops stay the
    /// interface's: frames leave by it.
    pub xsk_dev: String,
}

impl PortInfo {
    /// An address of the interface in `ip`'s family, global ones first.
    fn source_for(&self, ip: IpAddr) -> Option<IpAddr> {
        let same = |a: &&IpAddr| a.is_ipv4() == ip.is_ipv4();
        let link_local = |a: &IpAddr| matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local());
        let mut it = self.addrs.iter().filter(same);
        it.clone()
            .find(|a| !link_local(a))
            .or_else(|| it.next())
            .copied()
    }

    /// Read index, MAC, MTU and addresses of `name` from the kernel.
    pub fn lookup(name: &str, side: IfSide) -> Result<PortInfo, AfXdpError> {
        let err = |e| AfXdpError::Iface(name.to_string(), e);
        let ifindex = crate::netlink::if_index(name).map_err(err)?;
        let l = crate::netlink::link(ifindex).map_err(err)?;
        let addrs = crate::netlink::addresses()
            .map_err(err)?
            .into_iter()
            .filter(|(i, _)| *i == ifindex)
            .map(|(_, a)| a)
            .collect();
        Ok(PortInfo {
            name: name.into(),
            side,
            ifindex,
            mac: l.mac,
            mtu: l.mtu,
            addrs,
            xsk_dev: name.into(),
        })
    }
}

struct Port {
    info: PortInfo,
    dq: DeviceQueue,
    rx: RingRx,
    tx: RingTx,
    hops: NextHops,
    pending_tx: Vec<XdpDesc>,
}

/// Anonymous, page-aligned mapping backing the UMEM.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> Result<Area, AfXdpError> {
        // SAFETY: anonymous private mapping, no fd; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(AfXdpError::Mmap(len, std::io::Error::last_os_error()));
        }
        let ptr =
            NonNull::new(p.cast()).ok_or(AfXdpError::Mmap(len, std::io::Error::other("null")))?;
        Ok(Area { ptr, len })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }

    /// The bytes of a descriptor, if it lies inside the area.
    fn bytes(&mut self, addr: u64, len: u32) -> Option<&mut [u8]> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len as usize)?;
        if end > self.len {
            return None;
        }
        // SAFETY: [start, end) is inside the mapping (checked above); the loop owns this frame
        // (it came from the RX ring or the free list, so the kernel is not writing it), and the
        // returned borrow is tied to `&mut self`, so no other slice aliases it.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), end - start) })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; the UMEM and rings using it were dropped
        // before (field order of `AfXdp`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The two sockets, their shared UMEM and the free-frame pool. Not `Send` (xdpilone's `Umem`
/// is not): create it on the thread that runs the loop.
pub struct AfXdp {
    ports: [Port; 2],
    umem: Umem,
    free: Vec<u64>,
    /// Scratch for one RX batch (kept to avoid an allocation per loop turn).
    batch: Vec<XdpDesc>,
    /// ICMP errors the I/O layer itself answers with (too big for the outgoing MTU).
    replies: Vec<(IfSide, Vec<u8>)>,
    stats: IoStats,
    // Dropped last: the rings and the UMEM point into it.
    area: Area,
}

impl std::fmt::Debug for AfXdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdp")
            .field("inside", &self.ports[0].info)
            .field("outside", &self.ports[1].info)
            .field("free", &self.free.len())
            .field("stats", &self.stats)
            .finish()
    }
}

fn xsk_err<'a>(iface: &'a str, what: &'static str) -> impl Fn(xdpilone::Errno) -> AfXdpError + 'a {
    move |e| AfXdpError::Xsk {
        iface: iface.into(),
        what,
        err: e.to_string(),
    }
}

impl AfXdp {
    /// Open one socket on queue 0 of each side's device (`PortInfo::xsk_dev`), sharing one UMEM.
    pub fn open(inside: PortInfo, outside: PortInfo) -> Result<AfXdp, AfXdpError> {
        let area = Area::new(FRAMES as usize * FRAME as usize)?;
        let cfg = UmemConfig {
            fill_size: RING,
            complete_size: RING,
            frame_size: FRAME,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is page aligned (fresh mmap), valid for its length, and outlives the
        // UMEM (dropped after it, see the field order of `AfXdp`).
        let umem = unsafe { Umem::new(cfg, area.as_slice_ptr()) }
            .map_err(xsk_err(&inside.name, "UMEM"))?;
        let p0 = Self::port(&umem, inside, true)?;
        let p1 = Self::port(&umem, outside, false)?;
        let free = (0..FRAMES)
            .map(|i| u64::from(i) * u64::from(FRAME))
            .collect();
        let mut x = AfXdp {
            ports: [p0, p1],
            umem,
            free,
            batch: Vec::with_capacity(BATCH as usize),
            replies: Vec::new(),
            stats: IoStats::default(),
            area,
        };
        x.refill();
        Ok(x)
    }

    fn port(umem: &Umem, info: PortInfo, first: bool) -> Result<Port, AfXdpError> {
        let name = info.xsk_dev.clone();
        let c = std::ffi::CString::new(name.clone())
            .map_err(|_| AfXdpError::Iface(name.clone(), std::io::Error::other("NUL in name")))?;
        let mut ifinfo = IfInfo::invalid();
        ifinfo.from_name(&c).map_err(xsk_err(&name, "interface"))?;
        ifinfo.set_queue(0);
        // The first socket is the UMEM's own; the second shares it, and its bind must carry no
        // flags (COPY/NEED_WAKEUP there give EINVAL).
        let sock = if first {
            Socket::with_shared(&ifinfo, umem)
        } else {
            Socket::new(&ifinfo)
        }
        .map_err(xsk_err(&name, "socket"))?;
        let dq = umem
            .fq_cq(&sock)
            .map_err(xsk_err(&name, "fill/completion rings"))?;
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: NonZeroU32::new(RING),
                    tx_size: NonZeroU32::new(RING),
                    bind_flags: 0,
                },
            )
            .map_err(xsk_err(&name, "rx/tx rings"))?;
        let rx = user.map_rx().map_err(xsk_err(&name, "map rx"))?;
        let tx = user.map_tx().map_err(xsk_err(&name, "map tx"))?;
        umem.bind(&user).map_err(xsk_err(&name, "bind"))?;
        Ok(Port {
            hops: NextHops::new(info.ifindex),
            info,
            dq,
            rx,
            tx,
            pending_tx: Vec::with_capacity(RING as usize),
        })
    }

    /// The socket fd of each side, for the XSKMAP of its interface (queue 0).
    pub fn socket_fds(&self) -> [(IfSide, i32); 2] {
        [
            (self.ports[0].info.side, self.ports[0].rx.as_raw_fd()),
            (self.ports[1].info.side, self.ports[1].rx.as_raw_fd()),
        ]
    }

    pub fn stats(&self) -> IoStats {
        self.stats
    }

    fn frame_base(addr: u64) -> u64 {
        addr & !u64::from(FRAME - 1)
    }

    /// Top up both fill rings from the free pool.
    fn refill(&mut self) {
        for p in &mut self.ports {
            // A reservation only re-reads the kernel's consumer index once the cached free
            // count is used up, so reserve until the ring is really full (at most twice).
            while !self.free.is_empty() {
                let mut w = p.dq.fill(RING);
                let n = (w.capacity() as usize).min(self.free.len());
                if n == 0 {
                    break;
                }
                let start = self.free.len() - n;
                w.insert(self.free.drain(start..));
                w.commit();
            }
        }
    }

    /// Return transmitted frames to the pool.
    fn reap(&mut self) {
        for p in &mut self.ports {
            Self::reap_port(p, &mut self.free);
        }
    }

    /// Rewrite MACs for leaving by `out`; checks MTU. `false` = drop (counted).
    fn prepare(port: &mut Port, stats: &mut IoStats, frame: &mut [u8], now: Instant) -> bool {
        let Some((l3_offset, dst)) = l3_destination(frame) else {
            stats.bad_desc += 1;
            return false;
        };
        if frame.len() - l3_offset > port.info.mtu as usize {
            // TODO(wire builder): answer with ICMP fragmentation-needed / packet-too-big.
            stats.too_big += 1;
            return false;
        }
        let Some(mac) = port.hops.resolve(dst, now) else {
            stats.no_neighbour += 1;
            return false;
        };
        frame[0..6].copy_from_slice(&mac);
        frame[6..12].copy_from_slice(&port.info.mac);
        true
    }

    fn rx_side(&mut self, i: usize, h: &mut dyn FrameHandler, now: Timestamp, at: Instant) -> u32 {
        let o = 1 - i;
        let side = self.ports[i].info.side;
        let mut descs = std::mem::take(&mut self.batch);
        descs.clear();
        {
            let mut r = self.ports[i].rx.receive(BATCH);
            while let Some(d) = r.read() {
                descs.push(d);
            }
            r.release();
        }
        let n = descs.len() as u32;
        self.stats.rx[i] += u64::from(n);
        for d in descs.drain(..) {
            let base = Self::frame_base(d.addr);
            let Some(frame) = self.area.bytes(d.addr, d.len) else {
                self.stats.bad_desc += 1;
                self.free.push(base);
                continue;
            };
            // Too big for the other side: answer before the engine sees (and NATs) it, so the
            // error quotes the packet as the sender sent it.
            if let Some((l3_offset, dst)) = l3_destination(frame) {
                let mtu = self.ports[o].info.mtu;
                if frame.len() - l3_offset > mtu as usize {
                    self.stats.too_big += 1;
                    let from = self.ports[i].info.source_for(dst);
                    let answer = from.and_then(|f| {
                        let info = natfw_engine::wire::parse(frame).ok()?;
                        natfw_engine::wire::build::icmp_too_big(frame, &info, mtu, f)
                    });
                    if let Some(r) = answer {
                        self.replies.push((side, r));
                    }
                    self.free.push(base);
                    continue;
                }
            }
            match h.handle(now, side, frame) {
                Disposition::Forward => {
                    if Self::prepare(&mut self.ports[o], &mut self.stats, frame, at) {
                        self.stats.forwarded += 1;
                        self.ports[o].pending_tx.push(XdpDesc {
                            addr: d.addr,
                            len: d.len,
                            options: 0,
                        });
                    } else {
                        self.free.push(base);
                    }
                }
                Disposition::Consumed => {
                    self.stats.consumed += 1;
                    self.free.push(base);
                }
                Disposition::ToKernel => {
                    self.stats.to_kernel_dropped += 1;
                    self.free.push(base);
                }
            }
        }
        self.batch = descs;
        if !self.replies.is_empty() {
            let mut replies = std::mem::take(&mut self.replies);
            self.send_emits(&mut replies, at);
            self.replies = replies;
        }
        n
    }

    fn send_emits(&mut self, emits: &mut Vec<(IfSide, Vec<u8>)>, at: Instant) {
        for (side, bytes) in emits.drain(..) {
            let o = usize::from(side == IfSide::Outside);
            if bytes.len() > FRAME as usize {
                self.stats.too_big += 1;
                continue;
            }
            let Some(base) = self.free.pop() else {
                self.stats.no_free_frame += 1;
                continue;
            };
            let len = bytes.len();
            let Some(frame) = self.area.bytes(base, len as u32) else {
                self.free.push(base);
                continue;
            };
            frame.copy_from_slice(&bytes);
            if Self::prepare(&mut self.ports[o], &mut self.stats, frame, at) {
                self.stats.emitted += 1;
                self.ports[o].pending_tx.push(XdpDesc {
                    addr: base,
                    len: len as u32,
                    options: 0,
                });
            } else {
                self.free.push(base);
            }
        }
    }

    /// Put pending frames on the TX rings and kick until the kernel has taken them. Frames that
    /// do not fit stay pending for the next turn (the loop stops reading the side that feeds a
    /// backed-up port, see [`AfXdp::can_receive_for`]): dropping them here cost TCP thousands of
    /// retransmits.
    fn flush(&mut self) {
        for i in 0..2 {
            let p = &mut self.ports[i];
            if p.pending_tx.is_empty() && p.tx.pending() == 0 {
                continue;
            }
            let mut sent = 0usize;
            // A reservation re-reads the kernel's consumer index only when the cached free
            // count is exhausted: reserve again until everything is in or the ring is full.
            while sent < p.pending_tx.len() {
                let n = {
                    let mut w = p.tx.transmit((p.pending_tx.len() - sent) as u32);
                    let cap = w.capacity() as usize;
                    let n = w.insert(p.pending_tx[sent..sent + cap].iter().copied()) as usize;
                    w.commit();
                    n
                };
                if n == 0 {
                    break;
                }
                sent += n;
                // Copy mode: each sendto moves at most 32 frames; kick until none is pending.
                Self::kick(p, &mut self.free);
            }
            p.pending_tx.drain(..sent);
            if !p.pending_tx.is_empty() {
                self.stats.tx_ring_full += 1;
            }
            if sent == 0 {
                Self::kick(p, &mut self.free);
            }
            self.stats.tx[i] += sent as u64;
        }
    }

    /// Wake the kernel's transmit path until the TX ring is empty or it stops making progress
    /// (completion ring full, device busy); completions are reaped on the way.
    fn kick(p: &mut Port, free: &mut Vec<u64>) {
        let mut kicks = 0;
        let mut before = p.tx.pending();
        while before > 0 && kicks < MAX_KICKS {
            p.tx.wake();
            kicks += 1;
            let now = p.tx.pending();
            if now == before {
                // No progress: the completion ring may be full. Reap it; if that frees
                // nothing either, the device is busy: try again next turn.
                if Self::reap_port(p, free) == 0 {
                    break;
                }
            }
            before = now;
        }
    }

    /// Return one port's transmitted frames to the pool; how many.
    fn reap_port(p: &mut Port, free: &mut Vec<u64>) -> usize {
        let mut c = p.dq.complete(RING);
        let mut n = 0;
        while let Some(addr) = c.read() {
            free.push(Self::frame_base(addr));
            n += 1;
        }
        c.release();
        n
    }

    /// Whether frames received on side `i` may be taken now: not while the port they leave by
    /// has a full ring's worth waiting (backpressure: they stay in the RX ring, and the kernel
    /// drops at the socket when that fills, like a NIC's full RX queue).
    fn can_receive_for(&self, i: usize) -> bool {
        self.ports[1 - i].pending_tx.len() < RING as usize
    }

    fn wait(&self, timeout: Duration) {
        let mut fds = [
            libc::pollfd {
                fd: self.ports[0].rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.ports[1].rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout.as_millis() as libc::c_int) };
    }

    /// Forward until `stop` is set. Calls `h.tick` about every `tick` interval.
    pub fn run(&mut self, h: &mut dyn FrameHandler, stop: &AtomicBool, tick: Duration) {
        let mut emits = Vec::new();
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            let now = Timestamp::now();
            let mut work = 0;
            for i in 0..2 {
                if self.can_receive_for(i) {
                    work += self.rx_side(i, h, now, at);
                } else {
                    work += 1; // backed up: keep turning, do not sleep
                }
            }
            h.take_emits(&mut emits);
            work += emits.len() as u32;
            self.send_emits(&mut emits, at);
            self.flush();
            self.reap();
            self.refill();
            if at.duration_since(last_tick) >= tick {
                h.tick(now, &self.stats);
                last_tick = at;
                h.take_emits(&mut emits);
                self.send_emits(&mut emits, at);
                self.flush();
            }
            let backlog = self
                .ports
                .iter()
                .any(|p| !p.pending_tx.is_empty() || p.tx.pending() > 0);
            if work == 0 && !backlog {
                self.wait(Duration::from_millis(10));
            }
        }
        // Last emits (e.g. after the caller's shutdown) are sent by `flush_emits`.
    }

    /// Send whatever the handler still has (after its shutdown), then reap.
    pub fn flush_emits(&mut self, h: &mut dyn FrameHandler) {
        let mut emits = Vec::new();
        h.take_emits(&mut emits);
        self.send_emits(&mut emits, Instant::now());
        self.flush();
        self.reap();
    }

    /// Frames neither in the free pool nor in any ring (fill, RX, TX, completion) nor waiting
    /// for TX ring space: frames the kernel holds between two rings (a transient handful) or
    /// leaked ones. Once the loop has stopped and the interfaces are quiet it must be 0.
    pub fn frames_unaccounted(&mut self) -> i64 {
        self.reap();
        let in_rings: u64 = self
            .ports
            .iter()
            .map(|p| {
                u64::from(p.dq.pending())
                    + u64::from(p.rx.available())
                    + u64::from(p.tx.pending())
                    + u64::from(p.dq.available())
                    + p.pending_tx.len() as u64
            })
            .sum();
        i64::from(self.umem.len_frames()) - self.free.len() as i64 - in_rings as i64
    }
}
