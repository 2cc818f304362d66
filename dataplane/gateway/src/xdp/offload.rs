//! The fast-path tables of both interfaces, driven by the engine (`natfw_engine`'s
//! `OffloadTable`): a flow is one entry on the inside (the client's tuple -> SNAT, out of the
//! outside interface) and one on the outside (the reply tuple -> reverse NAT, out of the
//! inside interface). Each entry counts the packets the tc program forwarded for it.

use aya::maps::{HashMap, MapData};
use natfw_engine::engine::{OffloadCounts, OffloadFlow, OffloadTable};
use natfw_engine::stats::Counter;

use super::maps::{OffloadKey, OffloadVal, REWRITE_DST, REWRITE_SRC};

/// Both interfaces' `offload` maps.
pub struct KernelOffload {
    inside: HashMap<MapData, OffloadKey, OffloadVal>,
    outside: HashMap<MapData, OffloadKey, OffloadVal>,
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

/// The inside key (client -> server) and the outside key (server -> EIP) of a flow.
pub fn keys(f: &OffloadFlow) -> (OffloadKey, OffloadKey) {
    let k = |src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16| OffloadKey {
        src,
        dst,
        sport: sport.to_be_bytes(),
        dport: dport.to_be_bytes(),
        proto: f.proto,
        pad: [0; 3],
    };
    (
        k(
            f.client.ip().octets(),
            f.server.ip().octets(),
            f.client.port(),
            f.server.port(),
        ),
        k(
            f.server.ip().octets(),
            f.eip.octets(),
            f.server.port(),
            f.eport,
        ),
    )
}

fn counter(v: &OffloadVal) -> Counter {
    Counter {
        packets: v.packets,
        bytes: v.bytes,
    }
}

impl KernelOffload {
    /// Empty both maps first: entries of an earlier process (the maps are per load, so only
    /// when a caller hands in maps it reused) must not forward flows this engine never saw.
    pub fn new(
        inside: HashMap<MapData, OffloadKey, OffloadVal>,
        outside: HashMap<MapData, OffloadKey, OffloadVal>,
        inside_ifindex: u32,
        outside_ifindex: u32,
    ) -> KernelOffload {
        Self::keeping(inside, outside, inside_ifindex, outside_ifindex, &[])
    }

    /// Keep the entries of `keep` (flows an earlier process handed over, to be adopted) and
    /// remove every other: an entry nobody has the facts of must not forward.
    pub fn keeping(
        inside: HashMap<MapData, OffloadKey, OffloadVal>,
        outside: HashMap<MapData, OffloadKey, OffloadVal>,
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
        let (ki, ko): (std::collections::HashSet<_>, std::collections::HashSet<_>) =
            keep.iter().map(keys).unzip();
        for (m, keep) in [(&mut k.inside, &ki), (&mut k.outside, &ko)] {
            let stale: Vec<OffloadKey> = m
                .keys()
                .filter_map(Result::ok)
                .filter(|key| !keep.contains(key))
                .collect();
            for key in stale {
                let _ = m.remove(&key);
            }
        }
        k
    }

    /// Another handle on the same two tables (duplicated map fds), for another packet
    /// worker's engine: each adds, reads and removes only its own flows' entries.
    pub fn try_clone(&self) -> Result<KernelOffload, String> {
        fn dup(
            m: &HashMap<MapData, OffloadKey, OffloadVal>,
        ) -> Result<HashMap<MapData, OffloadKey, OffloadVal>, String> {
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
        Ok(KernelOffload {
            inside: dup(&self.inside)?,
            outside: dup(&self.outside)?,
            inside_ifindex: self.inside_ifindex,
            outside_ifindex: self.outside_ifindex,
        })
    }

    /// Remove every entry.
    pub fn clear(&mut self) {
        for m in [&mut self.inside, &mut self.outside] {
            let keys: Vec<OffloadKey> = m.keys().filter_map(Result::ok).collect();
            for key in keys {
                let _ = m.remove(&key);
            }
        }
    }

    /// Entries in the (inside, outside) maps, for tests and diagnostics.
    pub fn len(&self) -> (usize, usize) {
        (self.inside.keys().count(), self.outside.keys().count())
    }

    /// No entry in either map.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

impl OffloadTable for KernelOffload {
    fn add(&mut self, f: &OffloadFlow) -> bool {
        let (ki, ko) = keys(f);
        let val = |addr: [u8; 4], port: u16, rewrite: u8, egress: u32| OffloadVal {
            new_addr: addr,
            new_port: port.to_be_bytes(),
            rewrite,
            pad: 0,
            egress_ifindex: egress,
            pad2: 0,
            packets: 0,
            bytes: 0,
            last_ns: 0,
        };
        let vi = val(f.eip.octets(), f.eport, REWRITE_SRC, self.outside_ifindex);
        let vo = val(
            f.client.ip().octets(),
            f.client.port(),
            REWRITE_DST,
            self.inside_ifindex,
        );
        if self.outside.insert(ko, vo, 0).is_err() {
            return false;
        }
        if self.inside.insert(ki, vi, 0).is_err() {
            let _ = self.outside.remove(&ko);
            return false;
        }
        true
    }

    fn read(&mut self, f: &OffloadFlow) -> Option<OffloadCounts> {
        let (ki, ko) = keys(f);
        let vi = self.inside.get(&ki, 0).ok()?;
        let vo = self.outside.get(&ko, 0).ok()?;
        Some(OffloadCounts {
            out: counter(&vi),
            inb: counter(&vo),
        })
    }

    fn remove(&mut self, f: &OffloadFlow) -> Option<OffloadCounts> {
        let (ki, ko) = keys(f);
        // Inside first: a client packet that finds no entry goes to the engine again.
        let vi = self.inside.get(&ki, 0).ok();
        let _ = self.inside.remove(&ki);
        let vo = self.outside.get(&ko, 0).ok();
        let _ = self.outside.remove(&ko);
        if vi.is_none() && vo.is_none() {
            return None;
        }
        Some(OffloadCounts {
            out: vi.as_ref().map(counter).unwrap_or_default(),
            inb: vo.as_ref().map(counter).unwrap_or_default(),
        })
    }
}
