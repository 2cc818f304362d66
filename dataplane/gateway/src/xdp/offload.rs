//! The fast-path tables of both interfaces, driven by the engine (`natfw_engine`'s
//! `OffloadTable`): a flow is one entry on the inside (the client's tuple -> SNAT, out of the
//! outside interface) and one on the outside (the reply tuple -> reverse NAT, out of the
//! inside interface), in each side's `offload` map (IPv4) or `offload6` map (IPv6). Each entry
//! counts the packets the tc program forwarded for it.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::IpAddr;

use aya::maps::{HashMap, MapData};
use natfw_engine::engine::{OffloadCounts, OffloadFlow, OffloadTable};
use natfw_engine::stats::Counter;

use super::maps::{Offload6Key, Offload6Val, OffloadKey, OffloadVal, REWRITE_DST, REWRITE_SRC};

/// One side's IPv4 table (`offload`).
pub type OffloadMap = HashMap<MapData, OffloadKey, OffloadVal>;
/// One side's IPv6 table (`offload6`).
pub type Offload6Map = HashMap<MapData, Offload6Key, Offload6Val>;

/// One side's fast-path tables, as [`super::Steering::take_offload`] hands them out.
pub struct OffloadMaps {
    pub v4: OffloadMap,
    pub v6: Offload6Map,
}

impl std::fmt::Debug for OffloadMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadMaps").finish_non_exhaustive()
    }
}

/// Both interfaces' `offload` and `offload6` maps.
pub struct KernelOffload {
    inside: OffloadMaps,
    outside: OffloadMaps,
    inside_ifindex: u32,
    outside_ifindex: u32,
}

impl std::fmt::Debug for KernelOffload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelOffload")
            .field("inside_ifindex", &self.inside_ifindex)
            .field("outside_ifindex", &self.outside_ifindex)
            .finish_non_exhaustive()
    }
}

/// A flow's inside key (client -> server) and outside key (server -> EIP), in the table of
/// its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKeys {
    V4(OffloadKey, OffloadKey),
    V6(Offload6Key, Offload6Key),
}

/// The keys of `f`; `None` when its addresses are not of one family (no table holds it).
pub fn keys(f: &OffloadFlow) -> Option<FlowKeys> {
    let (sport, dport, eport) = (
        f.client.port().to_be_bytes(),
        f.server.port().to_be_bytes(),
        f.eport.to_be_bytes(),
    );
    let server_port = dport;
    match (f.client.ip(), f.server.ip(), f.eip) {
        (IpAddr::V4(c), IpAddr::V4(s), IpAddr::V4(e)) => {
            let k = |src: [u8; 4], dst: [u8; 4], sport, dport| OffloadKey {
                src,
                dst,
                sport,
                dport,
                proto: f.proto,
                pad: [0; 3],
            };
            Some(FlowKeys::V4(
                k(c.octets(), s.octets(), sport, dport),
                k(s.octets(), e.octets(), server_port, eport),
            ))
        }
        (IpAddr::V6(c), IpAddr::V6(s), IpAddr::V6(e)) => {
            let k = |src: [u8; 16], dst: [u8; 16], sport, dport| Offload6Key {
                src,
                dst,
                sport,
                dport,
                proto: f.proto,
                pad: [0; 3],
            };
            Some(FlowKeys::V6(
                k(c.octets(), s.octets(), sport, dport),
                k(s.octets(), e.octets(), server_port, eport),
            ))
        }
        _ => None,
    }
}

fn counter(packets: u64, bytes: u64) -> Counter {
    Counter { packets, bytes }
}

fn c4(v: &OffloadVal) -> Counter {
    counter(v.packets, v.bytes)
}

fn c6(v: &Offload6Val) -> Counter {
    counter(v.packets, v.bytes)
}

/// Remove every entry of `m` whose key is not in `keep`.
fn remove_all_but<K: aya::Pod + Eq + Hash, V: aya::Pod>(
    m: &mut HashMap<MapData, K, V>,
    keep: &HashSet<K>,
) {
    let stale: Vec<K> = m
        .keys()
        .filter_map(Result::ok)
        .filter(|key| !keep.contains(key))
        .collect();
    for key in stale {
        let _ = m.remove(&key);
    }
}

/// Another handle on the map of `m` (a duplicated fd).
fn dup<K: aya::Pod, V: aya::Pod>(
    m: &HashMap<MapData, K, V>,
) -> Result<HashMap<MapData, K, V>, String> {
    use aya::maps::IterableMap;
    use std::os::fd::AsFd;
    let fd = m
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("duplicating a map fd: {e}"))?;
    let data = MapData::from_fd(fd).map_err(|e| e.to_string())?;
    HashMap::try_from(aya::maps::Map::HashMap(data)).map_err(|e| e.to_string())
}

impl OffloadMaps {
    fn try_clone(&self) -> Result<OffloadMaps, String> {
        Ok(OffloadMaps {
            v4: dup(&self.v4)?,
            v6: dup(&self.v6)?,
        })
    }

    fn len(&self) -> usize {
        self.v4.keys().count() + self.v6.keys().count()
    }
}

impl KernelOffload {
    /// Empty all maps first: entries of an earlier process (the maps are per load, so only
    /// when a caller hands in maps it reused) must not forward flows this engine never saw.
    pub fn new(
        inside: OffloadMaps,
        outside: OffloadMaps,
        inside_ifindex: u32,
        outside_ifindex: u32,
    ) -> KernelOffload {
        Self::keeping(inside, outside, inside_ifindex, outside_ifindex, &[])
    }

    /// Keep the entries of `keep` (flows an earlier process handed over, to be adopted) and
    /// remove every other, in both families' maps: an entry nobody has the facts of must not
    /// forward.
    pub fn keeping(
        inside: OffloadMaps,
        outside: OffloadMaps,
        inside_ifindex: u32,
        outside_ifindex: u32,
        keep: &[OffloadFlow],
    ) -> KernelOffload {
        let mut k = KernelOffload {
            inside,
            outside,
            inside_ifindex,
            outside_ifindex,
        };
        let (mut ki4, mut ko4, mut ki6, mut ko6) = (
            HashSet::new(),
            HashSet::new(),
            HashSet::new(),
            HashSet::new(),
        );
        for f in keep {
            match keys(f) {
                Some(FlowKeys::V4(i, o)) => {
                    ki4.insert(i);
                    ko4.insert(o);
                }
                Some(FlowKeys::V6(i, o)) => {
                    ki6.insert(i);
                    ko6.insert(o);
                }
                None => {}
            }
        }
        remove_all_but(&mut k.inside.v4, &ki4);
        remove_all_but(&mut k.outside.v4, &ko4);
        remove_all_but(&mut k.inside.v6, &ki6);
        remove_all_but(&mut k.outside.v6, &ko6);
        k
    }

    /// Another handle on the same tables (duplicated map fds), for another packet worker's
    /// engine: each adds, reads and removes only its own flows' entries.
    pub fn try_clone(&self) -> Result<KernelOffload, String> {
        Ok(KernelOffload {
            inside: self.inside.try_clone()?,
            outside: self.outside.try_clone()?,
            inside_ifindex: self.inside_ifindex,
            outside_ifindex: self.outside_ifindex,
        })
    }

    /// Remove every entry.
    pub fn clear(&mut self) {
        let (none4, none6) = (HashSet::new(), HashSet::new());
        for m in [&mut self.inside, &mut self.outside] {
            remove_all_but(&mut m.v4, &none4);
            remove_all_but(&mut m.v6, &none6);
        }
    }

    /// Entries in the (inside, outside) maps, both families, for tests and diagnostics.
    pub fn len(&self) -> (usize, usize) {
        (self.inside.len(), self.outside.len())
    }

    /// No entry in any map.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

impl OffloadTable for KernelOffload {
    fn add(&mut self, f: &OffloadFlow) -> bool {
        let (eport, cport) = (f.eport.to_be_bytes(), f.client.port().to_be_bytes());
        match (keys(f), f.eip, f.client.ip()) {
            (Some(FlowKeys::V4(ki, ko)), IpAddr::V4(eip), IpAddr::V4(client)) => {
                let val = |new_addr: [u8; 4], new_port, rewrite, egress_ifindex| OffloadVal {
                    new_addr,
                    new_port,
                    rewrite,
                    pad: 0,
                    egress_ifindex,
                    pad2: 0,
                    packets: 0,
                    bytes: 0,
                    last_ns: 0,
                };
                let vi = val(eip.octets(), eport, REWRITE_SRC, self.outside_ifindex);
                let vo = val(client.octets(), cport, REWRITE_DST, self.inside_ifindex);
                if self.outside.v4.insert(ko, vo, 0).is_err() {
                    return false;
                }
                if self.inside.v4.insert(ki, vi, 0).is_err() {
                    let _ = self.outside.v4.remove(&ko);
                    return false;
                }
                true
            }
            (Some(FlowKeys::V6(ki, ko)), IpAddr::V6(eip), IpAddr::V6(client)) => {
                let val = |new_addr: [u8; 16], new_port, rewrite, egress_ifindex| Offload6Val {
                    new_addr,
                    new_port,
                    rewrite,
                    pad: 0,
                    egress_ifindex,
                    packets: 0,
                    bytes: 0,
                    last_ns: 0,
                };
                let vi = val(eip.octets(), eport, REWRITE_SRC, self.outside_ifindex);
                let vo = val(client.octets(), cport, REWRITE_DST, self.inside_ifindex);
                if self.outside.v6.insert(ko, vo, 0).is_err() {
                    return false;
                }
                if self.inside.v6.insert(ki, vi, 0).is_err() {
                    let _ = self.outside.v6.remove(&ko);
                    return false;
                }
                true
            }
            _ => false,
        }
    }

    fn read(&mut self, f: &OffloadFlow) -> Option<OffloadCounts> {
        match keys(f)? {
            FlowKeys::V4(ki, ko) => {
                let vi = self.inside.v4.get(&ki, 0).ok()?;
                let vo = self.outside.v4.get(&ko, 0).ok()?;
                Some(OffloadCounts {
                    out: c4(&vi),
                    inb: c4(&vo),
                })
            }
            FlowKeys::V6(ki, ko) => {
                let vi = self.inside.v6.get(&ki, 0).ok()?;
                let vo = self.outside.v6.get(&ko, 0).ok()?;
                Some(OffloadCounts {
                    out: c6(&vi),
                    inb: c6(&vo),
                })
            }
        }
    }

    fn remove(&mut self, f: &OffloadFlow) -> Option<OffloadCounts> {
        // Inside first: a client packet that finds no entry goes to the engine again.
        let (vi, vo) = match keys(f)? {
            FlowKeys::V4(ki, ko) => {
                let vi = self.inside.v4.get(&ki, 0).ok().map(|v| c4(&v));
                let _ = self.inside.v4.remove(&ki);
                let vo = self.outside.v4.get(&ko, 0).ok().map(|v| c4(&v));
                let _ = self.outside.v4.remove(&ko);
                (vi, vo)
            }
            FlowKeys::V6(ki, ko) => {
                let vi = self.inside.v6.get(&ki, 0).ok().map(|v| c6(&v));
                let _ = self.inside.v6.remove(&ki);
                let vo = self.outside.v6.get(&ko, 0).ok().map(|v| c6(&v));
                let _ = self.outside.v6.remove(&ko);
                (vi, vo)
            }
        };
        if vi.is_none() && vo.is_none() {
            return None;
        }
        Some(OffloadCounts {
            out: vi.unwrap_or_default(),
            inb: vo.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn flow(client: &str, server: &str, eip: &str) -> OffloadFlow {
        OffloadFlow {
            client: client.parse::<SocketAddr>().unwrap(),
            server: server.parse::<SocketAddr>().unwrap(),
            eip: eip.parse().unwrap(),
            eport: 40_001,
            proto: 17,
        }
    }

    #[test]
    fn keys_are_the_tuples_as_each_side_sees_them_in_the_flows_family() {
        let Some(FlowKeys::V4(i, o)) =
            keys(&flow("10.1.2.3:40000", "198.51.100.7:53", "203.0.113.1"))
        else {
            panic!("IPv4 keys");
        };
        assert_eq!((i.src, i.dst), ([10, 1, 2, 3], [198, 51, 100, 7]));
        assert_eq!((i.sport, i.dport), (40_000u16.to_be_bytes(), [0, 53]));
        assert_eq!((o.src, o.dst), ([198, 51, 100, 7], [203, 0, 113, 1]));
        assert_eq!((o.sport, o.dport), ([0, 53], 40_001u16.to_be_bytes()));
        let f6 = flow("[fd00::5]:40000", "[2001:db8:5::7]:443", "2001:db8::1");
        let Some(FlowKeys::V6(i, o)) = keys(&f6) else {
            panic!("IPv6 keys");
        };
        let ip6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert_eq!((i.src, i.dst), (ip6("fd00::5"), ip6("2001:db8:5::7")));
        assert_eq!((o.src, o.dst), (ip6("2001:db8:5::7"), ip6("2001:db8::1")));
        assert_eq!(
            (o.sport, o.dport),
            (443u16.to_be_bytes(), 40_001u16.to_be_bytes())
        );
        assert_eq!(i.proto, 17);
        assert!(keys(&flow("10.1.2.3:1", "[2001:db8::7]:2", "203.0.113.1")).is_none());
        assert!(keys(&flow("[fd00::5]:1", "[2001:db8::7]:2", "203.0.113.1")).is_none());
    }
}
