//! A small, bounds-checked NETLINK_ROUTE client: the few questions `natfw run` asks the kernel
//! (links, addresses, routes, neighbours) and removing a stale XDP program. Written here instead
//! of pulling an async netlink stack into a synchronous packet loop; every attribute is read
//! through length checks, never trusted.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_ADDRESS: u16 = 1;
const IFLA_MTU: u16 = 4;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const RT_TABLE_MAIN: u32 = 254;
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_FAILED: u16 = 0x20;
const NUD_NOARP: u16 = 0x40;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// A link's state as `natfw run` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub up: bool,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// A route as the kernel would use it for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    pub oif: u32,
    /// `None` = on-link (the destination itself is the next hop).
    pub gateway: Option<IpAddr>,
}

/// Interface index by name.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {name}"),
        ));
    }
    Ok(idx)
}

/// Link state, MAC and MTU of interface `index`.
pub fn link(index: u32) -> io::Result<LinkInfo> {
    let body = ifinfomsg(index);
    let msgs = Socket::open()?.request(RTM_GETLINK, NLM_F_REQUEST, &body)?;
    for (ty, m) in &msgs {
        if *ty != 16 || m.len() < 16 {
            continue; // RTM_NEWLINK
        }
        let flags = u32::from_ne_bytes(m[8..12].try_into().unwrap_or_default());
        let mut info = LinkInfo {
            index,
            up: flags & libc::IFF_UP as u32 != 0,
            mac: [0; 6],
            mtu: 0,
        };
        for (t, v) in Attrs(&m[16..]) {
            match t {
                IFLA_ADDRESS if v.len() == 6 => info.mac.copy_from_slice(v),
                IFLA_MTU if v.len() == 4 => info.mtu = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
                _ => {}
            }
        }
        return Ok(info);
    }
    Err(io::Error::other(format!(
        "no RTM_NEWLINK for ifindex {index}"
    )))
}

/// Active RX queues of interface `name` (ethtool channels: rx + combined), `None` when the
/// driver does not report channels. Netlink's IFLA_NUM_RX_QUEUES is the allocated number
/// (veth allocates one per CPU but activates one), so the ethtool ioctl is asked instead.
pub fn active_rx_queues(name: &str) -> io::Result<Option<u32>> {
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined, rx_count,
    // tx_count, other_count, combined_count.
    let mut ch = [0u32; 9];
    ch[0] = ETHTOOL_GCHANNELS;
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = ch.as_mut_ptr().cast();
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is ours; the descriptor is closed by OwnedFd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL with a valid ifreq whose data points to a live ethtool_channels
    // (`ch`, 9 u32) for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(ch[5] + ch[8]))
}

/// Every address configured on the system, with its interface index.
pub fn addresses() -> io::Result<Vec<(u32, IpAddr)>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let body = [family, 0, 0, 0, 0, 0, 0, 0]; // ifaddrmsg
        for (ty, m) in Socket::open()?.request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, &body)? {
            if ty != RTM_NEWADDR || m.len() < 8 {
                continue;
            }
            let index = u32::from_ne_bytes([m[4], m[5], m[6], m[7]]);
            let mut local = None;
            let mut addr = None;
            for (t, v) in Attrs(&m[8..]) {
                match t {
                    IFA_LOCAL => local = ip_from(v),
                    IFA_ADDRESS => addr = ip_from(v),
                    _ => {}
                }
            }
            if let Some(a) = local.or(addr) {
                out.push((index, a));
            }
        }
    }
    Ok(out)
}

/// The route the kernel picks for `dst` (RTM_GETROUTE for one address).
pub fn route_get(dst: IpAddr) -> io::Result<RouteInfo> {
    let (family, bits, bytes) = ip_parts(dst);
    let mut body = vec![family, bits, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // rtmsg
    push_attr(&mut body, RTA_DST, &bytes);
    let msgs = Socket::open()?.request(RTM_GETROUTE, NLM_F_REQUEST, &body)?;
    parse_routes(&msgs)
        .into_iter()
        .next()
        .map(|(_, _, r)| r)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no route to {dst}")))
}

/// Default routes of the main table for one family (`true` = IPv6).
pub fn default_routes(v6: bool) -> io::Result<Vec<RouteInfo>> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    let body = [family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let msgs = Socket::open()?.request(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, &body)?;
    Ok(parse_routes(&msgs)
        .into_iter()
        .filter(|(dst_len, table, _)| *dst_len == 0 && *table == RT_TABLE_MAIN)
        .map(|(_, _, r)| r)
        .collect())
}

fn parse_routes(msgs: &[(u16, Vec<u8>)]) -> Vec<(u8, u32, RouteInfo)> {
    let mut out = Vec::new();
    for (ty, m) in msgs {
        if *ty != RTM_NEWROUTE || m.len() < 12 {
            continue;
        }
        let dst_len = m[1];
        let mut table = u32::from(m[4]);
        let mut r = RouteInfo {
            oif: 0,
            gateway: None,
        };
        for (t, v) in Attrs(&m[12..]) {
            match t {
                RTA_OIF if v.len() == 4 => r.oif = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
                RTA_GATEWAY => r.gateway = ip_from(v),
                RTA_TABLE if v.len() == 4 => table = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
                _ => {}
            }
        }
        out.push((dst_len, table, r));
    }
    out
}

/// The link-layer address of neighbour `ip` on `ifindex`, if the kernel has a usable entry.
pub fn neighbour(ifindex: u32, ip: IpAddr) -> io::Result<Option<[u8; 6]>> {
    let (family, _, bytes) = ip_parts(ip);
    let mut body = vec![family, 0, 0, 0];
    body.extend_from_slice(&ifindex.to_ne_bytes());
    body.extend_from_slice(&[0, 0, 0, 0]); // state, flags, type
    push_attr(&mut body, NDA_DST, &bytes);
    let msgs = match Socket::open()?.request(RTM_GETNEIGH, NLM_F_REQUEST, &body) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    for (ty, m) in &msgs {
        if *ty != RTM_NEWNEIGH || m.len() < 12 {
            continue;
        }
        let state = u16::from_ne_bytes([m[8], m[9]]);
        if state & (NUD_INCOMPLETE | NUD_FAILED | NUD_NOARP) != 0 {
            continue;
        }
        for (t, v) in Attrs(&m[12..]) {
            if t == NDA_LLADDR && v.len() == 6 {
                let mut mac = [0; 6];
                mac.copy_from_slice(v);
                return Ok(Some(mac));
            }
        }
    }
    Ok(None)
}

/// Remove any netlink-attached XDP program (generic and driver mode) from `ifindex`, as
/// `ip link set dev X xdp off` does. Fails with EBUSY when a live bpf_link owns the attachment
/// (another natfw is running).
pub fn detach_xdp(ifindex: u32) -> io::Result<()> {
    for mode in [XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE] {
        let mut body = ifinfomsg(ifindex);
        let mut nested = Vec::new();
        push_attr(&mut nested, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
        push_attr(&mut nested, IFLA_XDP_FLAGS, &mode.to_ne_bytes());
        push_attr(&mut body, IFLA_XDP | NLA_F_NESTED, &nested);
        Socket::open()?.request(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, &body)?;
    }
    Ok(())
}

fn ifinfomsg(index: u32) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

fn ip_parts(ip: IpAddr) -> (u8, u8, Vec<u8>) {
    match ip {
        IpAddr::V4(a) => (libc::AF_INET as u8, 32, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, 128, a.octets().to_vec()),
    }
}

fn ip_from(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
        _ => None,
    }
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, val: &[u8]) {
    let len = 4 + val.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(val);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterator over `rtattr`s: (type without flag bits, value). Stops at the first malformed one.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        let val = &b[4..len];
        self.0 = b.get(align4(len)..).unwrap_or(&[]);
        Some((ty, val))
    }
}

struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: valid fd, pointer to a live timeval of the size passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Socket { fd, seq: 1 })
    }

    /// Send one request; collect the reply messages (type, body after the nlmsghdr) until DONE,
    /// an ACK, or the single reply of a non-dump request. An error reply becomes `Err`.
    fn request(&mut self, ty: u16, flags: u16, body: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
        self.seq += 1;
        let len = 16 + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: valid fd; buffer pointer and length describe `msg`. Destination = kernel
        // (a zeroed sockaddr_nl is pid 0).
        let sent = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: valid fd; `buf` is writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let mlen = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let mty = u16::from_ne_bytes([rest[4], rest[5]]);
                let mseq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if mlen < 16 || mlen > rest.len() {
                    return Err(io::Error::other("malformed netlink message"));
                }
                let payload = &rest[16..mlen];
                rest = rest.get(align4(mlen)..).unwrap_or(&[]);
                if mseq != self.seq {
                    continue;
                }
                match mty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if code == 0 {
                            return Ok(out); // ACK
                        }
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    _ => {
                        out.push((mty, payload.to_vec()));
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_stop_at_malformed_lengths() {
        let mut b = Vec::new();
        push_attr(&mut b, 7, &[1, 2, 3]);
        b.extend_from_slice(&[200, 0, 1, 0, 9]); // claims 200 bytes
        let v: Vec<_> = Attrs(&b).collect();
        assert_eq!(v, vec![(7, &[1u8, 2, 3][..])]);
    }

    #[test]
    fn loopback_is_known() {
        let idx = if_index("lo").unwrap();
        let l = link(idx).unwrap();
        assert!(l.up);
        assert!(addresses()
            .unwrap()
            .iter()
            .any(|(i, a)| *i == idx && a.is_loopback()));
        let r = route_get("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(r.oif, idx);
        // Loopback reports no ethtool channels.
        assert_eq!(active_rx_queues("lo").unwrap(), None);
        assert!(active_rx_queues("no-such-if0").is_err());
    }
}
