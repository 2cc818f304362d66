//! The few questions `natfw run` asks the kernel over NETLINK_ROUTE — links, addresses, routes,
//! neighbours, nexthop objects — removing a stale XDP program and making the slow-path veth
//! pairs of split mode, through netlink-packet-route
//! (messages) and netlink-sys (a synchronous socket). Default routes may be single-path,
//! multipath (ECMP, `RTA_MULTIPATH`) or point at a nexthop object (`RTA_NH_ID`, `ip nexthop`),
//! itself a gateway or a group of them; every path is reported.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use netlink_packet_core::{
    DecodeError, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, NlasIterator, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo as RtLinkInfo, LinkMessage, LinkXdp,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteNextHop, RouteVia,
};
use netlink_packet_route::{address::AddressAttribute, address::AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;
/// Nexthop objects (linux/nexthop.h): not covered by netlink-packet-route.
const RTM_NEWNEXTHOP: u16 = 104;
const RTM_GETNEXTHOP: u16 = 106;
const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;

/// A link's state as `natfw run` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub up: bool,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// A route (one path of it) as the kernel would use it for one destination.
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
    let mut m = LinkMessage::default();
    m.header.index = index;
    for reply in route_request(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST)? {
        let RouteNetlinkMessage::NewLink(l) = reply else {
            continue;
        };
        let mut info = LinkInfo {
            index,
            up: l.header.flags.contains(LinkFlags::Up),
            mac: [0; 6],
            mtu: 0,
        };
        for a in &l.attributes {
            match a {
                LinkAttribute::Address(v) if v.len() == 6 => info.mac.copy_from_slice(v),
                LinkAttribute::Mtu(v) => info.mtu = *v,
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
    if let Err(e) = ethtool(name, &mut ch) {
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(ch[5] + ch[8]))
}

/// Create the veth pair `a` <-> `b` with MTU `mtu` and bring both ends up, with no IPv6
/// address generated on either (no link-local address, so no neighbour or router solicitation:
/// nothing of the kernel's own is sent on them) and, where `/proc/sys` is writable, IPv4
/// forwarding off on both. The rest is netlink only, so it works where `/proc/sys` is
/// read-only (containers). Fails with `AlreadyExists` when `a` exists.
pub fn create_veth(a: &str, b: &str, mtu: u32) -> io::Result<()> {
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(b.into()));
    peer.attributes.push(LinkAttribute::Mtu(mtu));
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(a.into()));
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        RtLinkInfo::Kind(InfoKind::Veth),
        RtLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    route_request(
        RouteNetlinkMessage::NewLink(m),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )?;
    for name in [a, b] {
        let index = if_index(name)?;
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]));
        match route_request(RouteNetlinkMessage::SetLink(m), NLM_F_REQUEST | NLM_F_ACK) {
            Ok(_) => {}
            // A kernel without IPv6 generates no IPv6 address anyway.
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
            Err(e) => return Err(e),
        }
        // No IPv4 forwarding of what arrives on them: a packet that reaches an end's stack
        // (no program attached there any more while natfw stops, with the steering link
        // pinned for a handover) is dropped, not routed. Frames on the pair keep the real
        // interfaces' MACs, so the stack drops them as not its own anyway, and the guard
        // drops anything forwarded from them; read-only `/proc/sys` (a container) is fine.
        let fwd = format!("/proc/sys/net/ipv4/conf/{name}/forwarding");
        if let Err(e) = std::fs::write(&fwd, "0") {
            tracing::debug!("{fwd}: {e} (left as it is)");
        }
        set_up(index)?;
    }
    Ok(())
}

/// Bring link `index` up.
pub fn set_up(index: u32) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    route_request(RouteNetlinkMessage::SetLink(m), NLM_F_REQUEST | NLM_F_ACK)?;
    Ok(())
}

/// Delete link `name` (a veth: both ends). Returns whether it existed.
pub fn delete_link(name: &str) -> io::Result<bool> {
    let index = match if_index(name) {
        Ok(i) => i,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut m = LinkMessage::default();
    m.header.index = index;
    route_request(RouteNetlinkMessage::DelLink(m), NLM_F_REQUEST | NLM_F_ACK)?;
    Ok(true)
}

/// Turn TCP segmentation and generic segmentation offload off on `name`, so the kernel
/// segments super-frames before the device sends them (the slow-path veth: its peer runs XDP,
/// which takes single frames).
pub fn disable_segmentation_offload(name: &str) -> io::Result<()> {
    const ETHTOOL_STSO: u32 = 0x1f;
    const ETHTOOL_SGSO: u32 = 0x24;
    ethtool_value(name, ETHTOOL_STSO, 0)?;
    ethtool_value(name, ETHTOOL_SGSO, 0)?;
    Ok(())
}

/// One `struct ethtool_value` request (`cmd`, `data`); returns `data` after the call.
fn ethtool_value(name: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let mut v = [cmd, data];
    ethtool(name, &mut v)?;
    Ok(v[1])
}

/// One SIOCETHTOOL request on interface `name`: `req` is the ethtool struct (its first word
/// the command), a sequence of u32 as every struct used here is; filled in by the kernel.
fn ethtool(name: &str, req: &mut [u32]) -> io::Result<()> {
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
    ifr.ifr_ifru.ifru_data = req.as_mut_ptr().cast();
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is ours; the descriptor is closed by OwnedFd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL with a valid ifreq whose data points to `req`, a live buffer the
    // size of the ethtool struct its command names, for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Every address configured on the system, with its interface index.
pub fn addresses() -> io::Result<Vec<(u32, IpAddr)>> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut m = AddressMessage::default();
        m.header.family = family;
        let replies = route_request(
            RouteNetlinkMessage::GetAddress(m),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(a) = reply else {
                continue;
            };
            let mut local = None;
            let mut addr = None;
            for at in &a.attributes {
                match at {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => addr = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(addr) {
                out.push((a.header.index, ip));
            }
        }
    }
    Ok(out)
}

/// The route the kernel picks for `dst` (RTM_GETROUTE for one address).
pub fn route_get(dst: IpAddr) -> io::Result<RouteInfo> {
    let mut m = RouteMessage::default();
    m.header.address_family = family_of(dst);
    m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    let replies = route_request(RouteNetlinkMessage::GetRoute(m), NLM_F_REQUEST)?;
    replies
        .iter()
        .find_map(|r| match r {
            RouteNetlinkMessage::NewRoute(r) => route_paths(r).into_iter().next(),
            _ => None,
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no route to {dst}")))
}

/// Every path of the main table's default routes for one family (`true` = IPv6): one per
/// single-path route, one per next hop of a multipath (ECMP) route, one per member of the
/// nexthop object (or group) a route points at.
pub fn default_routes(v6: bool) -> io::Result<Vec<RouteInfo>> {
    let mut m = RouteMessage::default();
    m.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let replies = route_request(RouteNetlinkMessage::GetRoute(m), NLM_F_REQUEST | NLM_F_DUMP)?;
    let mut out = Vec::new();
    for reply in &replies {
        let RouteNetlinkMessage::NewRoute(r) = reply else {
            continue;
        };
        if r.header.destination_prefix_length != 0 || table(r) != RT_TABLE_MAIN {
            continue;
        }
        let nh_id = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::NhId(id) => Some(*id),
            _ => None,
        });
        match nh_id {
            // The nexthop object is the truth; the kernel may also expand it into the route
            // (nexthop_compat_mode), which is then the same paths again.
            Some(id) => out.extend(nexthop_paths(id)?),
            None => out.extend(route_paths(r)),
        }
    }
    Ok(out)
}

fn table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn gateway_of(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Gateway(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        // An IPv4 route via an IPv6 next hop (RFC 5549).
        RouteAttribute::Via(RouteVia::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Via(RouteVia::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

/// The paths of one route message: its own output interface and gateway, or each next hop of
/// `RTA_MULTIPATH`.
fn route_paths(r: &RouteMessage) -> Vec<RouteInfo> {
    let hops: Option<&Vec<RouteNextHop>> = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::MultiPath(h) => Some(h),
        _ => None,
    });
    if let Some(hops) = hops {
        return hops
            .iter()
            .map(|h| RouteInfo {
                oif: h.interface_index,
                gateway: gateway_of(&h.attributes),
            })
            .collect();
    }
    let oif = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    oif.map(|oif| RouteInfo {
        oif,
        gateway: gateway_of(&r.attributes),
    })
    .into_iter()
    .collect()
}

/// The paths of nexthop object `id`: itself, or each member of the group it is. Blackhole
/// nexthops have no path.
fn nexthop_paths(id: u32) -> io::Result<Vec<RouteInfo>> {
    let nh = nexthop(id)?;
    if nh.group.is_empty() {
        return Ok(nh.path().into_iter().collect());
    }
    let mut out = Vec::new();
    for member in nh.group {
        // Groups hold plain nexthops only (the kernel refuses nested groups).
        out.extend(nexthop(member)?.path());
    }
    Ok(out)
}

fn nexthop(id: u32) -> io::Result<Nexthop> {
    let replies = request(Nexthop::get(id), NLM_F_REQUEST)?;
    replies
        .into_iter()
        .find(|n| n.id == id)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no nexthop {id}")))
}

/// A nexthop object (`struct nhmsg` + NHA_* attributes), request and reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Nexthop {
    msg_type: u16,
    id: u32,
    oif: Option<u32>,
    gateway: Option<IpAddr>,
    blackhole: bool,
    /// Member ids of a group.
    group: Vec<u32>,
}

impl Nexthop {
    fn get(id: u32) -> Nexthop {
        Nexthop {
            msg_type: RTM_GETNEXTHOP,
            id,
            ..Nexthop::default()
        }
    }

    fn path(&self) -> Option<RouteInfo> {
        match (self.blackhole, self.oif) {
            (false, Some(oif)) => Some(RouteInfo {
                oif,
                gateway: self.gateway,
            }),
            _ => None,
        }
    }
}

impl NetlinkSerializable for Nexthop {
    fn message_type(&self) -> u16 {
        self.msg_type
    }

    fn buffer_len(&self) -> usize {
        8 + 8 // nhmsg, NHA_ID
    }

    fn serialize(&self, buf: &mut [u8]) {
        buf[..8].fill(0); // family AF_UNSPEC, scope, protocol, resvd, flags
        buf[8..10].copy_from_slice(&8u16.to_ne_bytes());
        buf[10..12].copy_from_slice(&NHA_ID.to_ne_bytes());
        buf[12..16].copy_from_slice(&self.id.to_ne_bytes());
    }
}

impl NetlinkDeserializable for Nexthop {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Nexthop, DecodeError> {
        let mut nh = Nexthop {
            msg_type: header.message_type,
            ..Nexthop::default()
        };
        if header.message_type != RTM_NEWNEXTHOP {
            return Ok(nh);
        }
        let attrs = payload
            .get(8..)
            .ok_or_else(|| DecodeError::from("nhmsg shorter than 8 bytes"))?;
        let u32_of = |v: &[u8]| -> Result<u32, DecodeError> {
            let b: [u8; 4] = v
                .try_into()
                .map_err(|_| DecodeError::from("nexthop attribute: not 4 bytes"))?;
            Ok(u32::from_ne_bytes(b))
        };
        for a in NlasIterator::new(attrs) {
            let a = a?;
            let v = a.value();
            match a.kind() & 0x3fff {
                NHA_ID => nh.id = u32_of(v)?,
                NHA_OIF => nh.oif = Some(u32_of(v)?),
                NHA_BLACKHOLE => nh.blackhole = true,
                NHA_GATEWAY => nh.gateway = ip_from(v),
                NHA_GROUP => {
                    // struct nexthop_grp { u32 id; u8 weight; u8 weight_high; u16 resvd2; }
                    if v.len() % 8 != 0 {
                        return Err(DecodeError::from("NHA_GROUP: not a multiple of 8 bytes"));
                    }
                    for g in v.chunks_exact(8) {
                        nh.group.push(u32_of(&g[..4])?);
                    }
                }
                _ => {}
            }
        }
        Ok(nh)
    }
}

/// The link-layer address of neighbour `ip` on `ifindex`, if the kernel has a usable entry.
pub fn neighbour(ifindex: u32, ip: IpAddr) -> io::Result<Option<[u8; 6]>> {
    let mut m = NeighbourMessage::default();
    m.header.family = family_of(ip);
    m.header.ifindex = ifindex;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }));
    let replies = match route_request(RouteNetlinkMessage::GetNeighbour(m), NLM_F_REQUEST) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    for reply in replies {
        let RouteNetlinkMessage::NewNeighbour(n) = reply else {
            continue;
        };
        if matches!(
            n.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::Noarp
        ) {
            continue;
        }
        for a in &n.attributes {
            if let NeighbourAttribute::LinkLayerAddress(v) = a {
                if let Ok(mac) = <[u8; 6]>::try_from(v.as_slice()) {
                    return Ok(Some(mac));
                }
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
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        m.attributes.push(LinkAttribute::Xdp(vec![
            LinkXdp::Fd(-1),
            LinkXdp::Flags(mode),
        ]));
        route_request(RouteNetlinkMessage::SetLink(m), NLM_F_REQUEST | NLM_F_ACK)?;
    }
    Ok(())
}

fn ip_from(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
        _ => None,
    }
}

fn route_request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    request(msg, flags)
}

/// Send one request on a fresh socket; collect the replies until DONE, an ACK, or the single
/// reply of a non-dump request. An error reply becomes `Err`; a reply that does not parse
/// becomes `InvalidData` (never trusted, never a panic). Replies wait at most 2 s.
fn request<M>(msg: M, flags: u16) -> io::Result<Vec<M>>
where
    M: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
{
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    set_recv_timeout(&sock, 2)?;
    const SEQ: u32 = 1;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = SEQ;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    sock.send(&buf, 0)?;

    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut out = Vec::new();
    loop {
        let (data, _) = sock.recv_from_full()?;
        let mut rest = &data[..];
        while !rest.is_empty() {
            let reply = NetlinkMessage::<M>::deserialize(rest).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("netlink reply: {e}"))
            })?;
            let len = reply.header.length as usize;
            if len < 16 || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "netlink reply: bad length",
                ));
            }
            rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
            if reply.header.sequence_number != SEQ {
                continue;
            }
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => match e.code {
                    None => return Ok(out), // ACK
                    Some(_) => return Err(e.to_io()),
                },
                NetlinkPayload::InnerMessage(m) => {
                    out.push(m);
                    if !dump && flags & NLM_F_ACK == 0 {
                        return Ok(out);
                    }
                }
                _ => {}
            }
        }
    }
}

fn set_recv_timeout(sock: &Socket, secs: i64) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: secs,
        tv_usec: 0,
    };
    // SAFETY: valid fd owned by `sock`; pointer to a live timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nh_reply(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        for (t, v) in attrs {
            let len = 4 + v.len();
            b.extend_from_slice(&(len as u16).to_ne_bytes());
            b.extend_from_slice(&t.to_ne_bytes());
            b.extend_from_slice(v);
            b.resize(b.len().next_multiple_of(4), 0);
        }
        b
    }

    fn header(ty: u16) -> NetlinkHeader {
        let mut h = NetlinkHeader::default();
        h.message_type = ty;
        h
    }

    #[test]
    fn nexthop_replies_are_parsed_with_length_checks() {
        let gw = [203u8, 0, 113, 2];
        let b = nh_reply(&[
            (NHA_ID, &7u32.to_ne_bytes()),
            (NHA_OIF, &3u32.to_ne_bytes()),
            (NHA_GATEWAY, &gw),
        ]);
        let nh = Nexthop::deserialize(&header(RTM_NEWNEXTHOP), &b).unwrap();
        assert_eq!(nh.id, 7);
        assert_eq!(
            nh.path(),
            Some(RouteInfo {
                oif: 3,
                gateway: Some("203.0.113.2".parse().unwrap())
            })
        );
        let mut grp = Vec::new();
        for id in [1u32, 2] {
            grp.extend_from_slice(&id.to_ne_bytes());
            grp.extend_from_slice(&[1, 0, 0, 0]);
        }
        let b = nh_reply(&[(NHA_ID, &9u32.to_ne_bytes()), (NHA_GROUP, &grp)]);
        let nh = Nexthop::deserialize(&header(RTM_NEWNEXTHOP), &b).unwrap();
        assert_eq!(nh.group, vec![1, 2]);
        assert_eq!(nh.path(), None);
        let b = nh_reply(&[(NHA_ID, &5u32.to_ne_bytes()), (NHA_BLACKHOLE, &[])]);
        assert_eq!(
            Nexthop::deserialize(&header(RTM_NEWNEXTHOP), &b)
                .unwrap()
                .path(),
            None
        );
        // Malformed: short header, odd group, short id, attribute past the end.
        assert!(Nexthop::deserialize(&header(RTM_NEWNEXTHOP), &[0; 4]).is_err());
        let b = nh_reply(&[(NHA_GROUP, &[0; 5])]);
        assert!(Nexthop::deserialize(&header(RTM_NEWNEXTHOP), &b).is_err());
        let b = nh_reply(&[(NHA_ID, &[0; 2])]);
        assert!(Nexthop::deserialize(&header(RTM_NEWNEXTHOP), &b).is_err());
        let mut b = nh_reply(&[]);
        b.extend_from_slice(&[200, 0, 1, 0, 9]);
        assert!(Nexthop::deserialize(&header(RTM_NEWNEXTHOP), &b).is_err());
    }

    #[test]
    fn multipath_routes_give_one_path_per_next_hop() {
        let mut r = RouteMessage::default();
        let hop = |oif, gw: &str| {
            let mut h = RouteNextHop::default();
            h.interface_index = oif;
            h.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(
                    gw.parse::<IpAddr>().unwrap(),
                )));
            h
        };
        r.attributes.push(RouteAttribute::MultiPath(vec![
            hop(4, "203.0.113.2"),
            hop(5, "198.51.100.2"),
        ]));
        let p = route_paths(&r);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[1],
            RouteInfo {
                oif: 5,
                gateway: Some("198.51.100.2".parse().unwrap())
            }
        );
        let mut single = RouteMessage::default();
        single.attributes.push(RouteAttribute::Oif(2));
        assert_eq!(
            route_paths(&single),
            vec![RouteInfo {
                oif: 2,
                gateway: None
            }]
        );
        assert!(route_paths(&RouteMessage::default()).is_empty());
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
        assert!(link(0x7fff_fff0).is_err());
    }
}
