//! Source NAT: which SNAT entry and EIP a private source uses, and which port (or ICMP echo id)
//! a new flow gets.
//!
//! Ports are unique per full reply tuple (EIP, protocol, port, remote address, remote port), as
//! in netfilter: one EIP can carry 64,512 flows to *each* remote endpoint instead of 64,512 in
//! total, and the reply index of the flow table is the only allocation state (nothing to keep
//! in sync, nothing to leak: a port is free again the moment its flow leaves the table).
//! The source port is kept when that tuple is free; otherwise ports 1024–65535 are probed from
//! a start derived from the flow's tuple.

use std::net::IpAddr;

use ipnet::IpNet;
use natfw_policy::Gateway;

use crate::conntrack::{FlowKey, Table};

/// Lowest port handed out when the source port cannot be kept.
pub const PORT_MIN: u16 = 1024;
/// How many candidate ports are tried before giving up on a flow.
const MAX_PROBES: u32 = 4096;

pub use crate::steer::SourceClass;

#[derive(Debug, Clone)]
struct Entry {
    source: IpNet,
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
}

/// A prefix as a masked integer of its family: `contains` is one AND and one compare, where
/// [`IpNet::contains`] rebuilds the network and broadcast addresses every time. Same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prefix {
    v6: bool,
    net: u128,
    mask: u128,
}

/// An address as (is IPv6, its bits).
#[inline]
fn addr_word(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

impl Prefix {
    fn of(n: &IpNet) -> Prefix {
        let (v6, mask) = match n {
            IpNet::V4(n) => (false, u128::from(u32::from(n.netmask()))),
            IpNet::V6(n) => (true, u128::from(n.netmask())),
        };
        Prefix {
            v6,
            net: addr_word(n.addr()).1 & mask,
            mask,
        }
    }

    #[inline]
    fn contains(&self, (v6, w): (bool, u128)) -> bool {
        self.v6 == v6 && w & self.mask == self.net
    }
}

/// The gateway's SNAT configuration, ready for lookups.
#[derive(Debug, Clone)]
pub struct Snat {
    entries: Vec<Entry>,
    bypass: Vec<IpNet>,
    /// `entries`' sources and `bypass`, as [`Prefix`]es (same order).
    entry_prefixes: Vec<Prefix>,
    bypass_prefixes: Vec<Prefix>,
    eips: Vec<IpAddr>,
    /// The packet worker this allocator serves: its ports are `≡ index (mod count)`.
    worker: crate::engine::WorkerSlot,
}

/// Stable 64-bit mix (splitmix64 finaliser): the same inputs give the same EIP and port in every
/// run, so replays are reproducible.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn ip_bits(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            mix(v as u64) ^ ((v >> 64) as u64)
        }
    }
}

impl Snat {
    /// Index the gateway's SNAT entries and bypass list.
    pub fn new(gw: &Gateway) -> Result<Snat, String> {
        let mut entries = Vec::with_capacity(gw.snat.len());
        for e in &gw.snat {
            if e.eips.is_empty() {
                return Err(format!("SNAT entry `{}` has no EIP", e.name));
            }
            let (v4, v6) = e.eips.iter().partition(|ip| ip.is_ipv4());
            entries.push(Entry {
                source: e.source,
                v4,
                v6,
            });
        }
        // Most specific source first, so nested entries pick the narrower one.
        entries.sort_by_key(|e| std::cmp::Reverse(e.source.prefix_len()));
        Ok(Snat {
            entry_prefixes: entries.iter().map(|e| Prefix::of(&e.source)).collect(),
            bypass_prefixes: gw.bypass.iter().map(Prefix::of).collect(),
            entries,
            bypass: gw.bypass.clone(),
            eips: gw.eips.clone(),
            worker: crate::engine::WorkerSlot::default(),
        })
    }

    /// How `src` is handled: the classifier's source decision ([`crate::steer::source_class`])
    /// over this gateway's entries, most specific first.
    /// Computed over precomputed masks; the same answer as `steer::source_class` (tested).
    #[inline]
    pub fn classify(&self, src: IpAddr) -> SourceClass {
        let w = addr_word(src);
        let Some(i) = self.entry_prefixes.iter().position(|p| p.contains(w)) else {
            return SourceClass::NotOurs;
        };
        if self.bypass_prefixes.iter().any(|p| p.contains(w)) {
            SourceClass::Bypass
        } else {
            SourceClass::Entry(i)
        }
    }

    /// The bypassed source prefixes.
    pub fn bypass(&self) -> &[IpNet] {
        &self.bypass
    }

    /// Add (`on`) or remove a bypassed source prefix (`natfw bypass add|remove`): the engine
    /// follows the steering program and nftables, so a source no longer bypassed is SNATed here.
    pub fn set_bypass(&mut self, net: IpNet, on: bool) {
        self.bypass.retain(|b| *b != net);
        if on {
            self.bypass.push(net);
        }
        self.bypass_prefixes = self.bypass.iter().map(Prefix::of).collect();
    }

    /// Is `ip` one of the gateway's EIPs?
    pub fn is_eip(&self, ip: IpAddr) -> bool {
        self.eips.contains(&ip)
    }

    /// The EIP of entry `entry` that `src` uses: chosen by a hash of the source, so one host
    /// always leaves through the same EIP. `None` when the entry has no EIP of that family.
    pub fn pick_eip(&self, entry: usize, src: IpAddr) -> Option<IpAddr> {
        let e = self.entries.get(entry)?;
        let pool = if src.is_ipv4() { &e.v4 } else { &e.v6 };
        if pool.is_empty() {
            return None;
        }
        let h = mix(ip_bits(src));
        pool.get((h % pool.len() as u64) as usize).copied()
    }

    /// Serve packet worker `w` of several: only ports `≡ w.index (mod w.count)` are handed
    /// out, so replies find their worker by destination port (`engine::worker`).
    pub fn set_worker(&mut self, w: crate::engine::WorkerSlot) {
        self.worker = w;
    }

    /// A port (ICMP: echo id) for `key` leaving through `eip` whose reply tuple is unused in
    /// `table`: the source port if free (and this worker's), else a probed one in 1024–65535
    /// of this worker's residue.
    pub fn allocate<T>(&self, table: &Table<T>, key: &FlowKey, eip: IpAddr) -> Option<u16> {
        if self.worker.owns_port(key.sport) && !table.reply_taken(&key.reply_key(eip, key.sport)) {
            return Some(key.sport);
        }
        // The candidates: base, base + step, ... up to 65535, base the first port >= PORT_MIN
        // of the residue.
        let step = u32::from(self.worker.count.max(1));
        let residue = u32::from(self.worker.index) % step;
        let lo = u32::from(PORT_MIN);
        let base = lo + (residue + step - lo % step) % step;
        let span = (u32::from(u16::MAX) - base) / step + 1;
        let seed = mix(ip_bits(key.src)
            ^ (u64::from(key.sport) << 16)
            ^ (u64::from(key.dport) << 32)
            ^ ip_bits(key.dst).rotate_left(17));
        let start = (seed % u64::from(span)) as u32;
        (0..MAX_PROBES.min(span))
            .map(|i| (base + ((start + i) % span) * step) as u16)
            .find(|&p| !table.reply_taken(&key.reply_key(eip, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{Timeouts, TimerClass, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
    use crate::time::Timestamp;
    use natfw_policy::SnatEntry;
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn gw() -> Gateway {
        Gateway {
            name: "gw".into(),
            inside: "in".into(),
            outside: "out".into(),
            eips: vec![
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
            snat: vec![
                SnatEntry {
                    name: "vpc".into(),
                    source: "10.0.0.0/8".parse().unwrap(),
                    eips: vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
                },
                SnatEntry {
                    name: "v6".into(),
                    source: "fc00::/7".parse().unwrap(),
                    eips: vec!["2001:db8::1".parse().unwrap()],
                },
            ],
            dnat: vec![],
            bypass: vec!["10.9.0.0/16".parse().unwrap()],
            allow_bypass_all: false,
            protected_bandwidth_mbps: None,
            fast_path: true,
            workers: 1,
        }
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn classify_sources() {
        let s = Snat::new(&gw()).unwrap();
        assert_eq!(s.classify(v4(10, 0, 1, 10)), SourceClass::Entry(0));
        assert_eq!(s.classify(v4(10, 9, 1, 10)), SourceClass::Bypass);
        assert_eq!(s.classify(v4(172, 16, 0, 1)), SourceClass::NotOurs);
        let ula: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(s.classify(ula), SourceClass::Entry(1));
        assert_eq!(
            s.pick_eip(1, ula),
            Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))
        );
        // No v6 EIP in the v4 entry.
        assert_eq!(s.pick_eip(0, ula), None);
        assert!(s.is_eip(v4(192, 0, 2, 2)));
        assert!(!s.is_eip(v4(192, 0, 2, 3)));
    }

    /// The precomputed masks answer as the shared source decision (`steer::source_class`)
    /// does, on prefixes with host bits set, /0, /32, both families and bypass changes.
    #[test]
    fn classify_agrees_with_source_class() {
        let mut g = gw();
        for (i, src) in ["10.0.0.1/24", "0.0.0.0/0", "2001:db8::1/128"]
            .iter()
            .enumerate()
        {
            g.snat.push(SnatEntry {
                name: format!("extra{i}"),
                source: src.parse().unwrap(),
                eips: vec!["192.0.2.1".parse().unwrap()],
            });
        }
        let mut s = Snat::new(&g).unwrap();
        let probes: Vec<IpAddr> = [
            "10.0.1.10",
            "10.9.1.10",
            "10.255.255.255",
            "11.0.0.1",
            "0.0.0.0",
            "172.16.0.1",
            "fd00::5",
            "fe80::1",
            "::",
            "::ffff:10.0.1.10",
            "8000::a00:10a",
            "ffff::",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let check = |s: &Snat| {
            for &p in &probes {
                let want =
                    crate::steer::source_class(s.entries.iter().map(|e| &e.source), &s.bypass, p);
                assert_eq!(s.classify(p), want, "{p}");
            }
        };
        check(&s);
        s.set_bypass("10.0.1.10/32".parse().unwrap(), true);
        s.set_bypass("fd00::/8".parse().unwrap(), true);
        check(&s);
        s.set_bypass("10.9.0.0/16".parse().unwrap(), false);
        check(&s);
    }

    #[test]
    fn eip_sticks_per_host_and_spreads() {
        let s = Snat::new(&gw()).unwrap();
        let mut used = HashSet::new();
        for i in 0..200u8 {
            let src = v4(10, 0, 0, i);
            let a = s.pick_eip(0, src).unwrap();
            assert_eq!(a, s.pick_eip(0, src).unwrap());
            used.insert(a);
        }
        assert_eq!(used.len(), 2, "both EIPs are used");
    }

    #[test]
    fn keeps_source_port_when_free_and_never_collides() {
        let s = Snat::new(&gw()).unwrap();
        let eip = v4(192, 0, 2, 1);
        let mut tb: Table<()> = Table::new(200_000, Timeouts::default());
        let dst = v4(203, 0, 113, 5);
        let mut replies = HashSet::new();
        let mut kept = 0;
        // 5,000 clients all using the same few source ports towards one server: the worst case.
        for c in 0..5_000u32 {
            for sport in [40000u16, 40001, 40002, 53] {
                let key = FlowKey {
                    src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + c)),
                    dst,
                    sport,
                    dport: 443,
                    proto: PROTO_TCP,
                };
                let port = s.allocate(&tb, &key, eip).unwrap();
                if port == sport {
                    kept += 1;
                } else {
                    assert!(port >= PORT_MIN);
                }
                assert!(replies.insert(key.reply_key(eip, port)), "collision");
                let r = tb
                    .insert(key, TimerClass::Established, Timestamp(0), ())
                    .unwrap();
                tb.set_snat(r, eip, port).unwrap();
            }
        }
        // Only the first client keeps its ports.
        assert_eq!(kept, 4);
        // A different server: the source port is free again there.
        let key = FlowKey {
            src: v4(10, 0, 0, 1),
            dst: v4(203, 0, 113, 6),
            sport: 40000,
            dport: 443,
            proto: PROTO_TCP,
        };
        assert_eq!(s.allocate(&tb, &key, eip), Some(40000));
        // And another protocol too.
        let key = FlowKey {
            proto: PROTO_UDP,
            dst,
            ..key
        };
        assert_eq!(s.allocate(&tb, &key, eip), Some(40000));
    }

    #[test]
    fn freed_port_is_reused_and_icmp_ids_translate() {
        let s = Snat::new(&gw()).unwrap();
        let eip = v4(192, 0, 2, 1);
        let mut tb: Table<()> = Table::new(10, Timeouts::default());
        let ping = |src| FlowKey {
            src,
            dst: v4(198, 51, 100, 10),
            sport: 7,
            dport: 7,
            proto: PROTO_ICMP,
        };
        let a = ping(v4(10, 0, 0, 1));
        let b = ping(v4(10, 0, 0, 2));
        let ra = tb.insert(a, TimerClass::Icmp, Timestamp(0), ()).unwrap();
        tb.set_snat(ra, eip, s.allocate(&tb, &a, eip).unwrap())
            .unwrap();
        assert_eq!(tb.get(ra).unwrap().snat, Some((eip, 7)));
        let id_b = s.allocate(&tb, &b, eip).unwrap();
        assert_ne!(id_b, 7, "same echo id from another host is translated");
        tb.remove(ra);
        assert_eq!(
            s.allocate(&tb, &b, eip),
            Some(7),
            "freed when the flow ends"
        );
    }

    #[test]
    fn a_worker_allocates_only_its_residue() {
        for count in [2u16, 3, 8] {
            for index in 0..count {
                let mut s = Snat::new(&gw()).unwrap();
                s.set_worker(crate::engine::WorkerSlot::new(index, count).unwrap());
                let mut tb: Table<()> = Table::new(100_000, Timeouts::default());
                let eip: IpAddr = "192.0.2.1".parse().unwrap();
                let mut seen = HashSet::new();
                // Many clients on the same source port to one server: each after the first
                // needs a probed port, and every one must be of this worker's residue.
                for i in 0..300u32 {
                    let key = FlowKey {
                        src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                        dst: "198.51.100.7".parse().unwrap(),
                        sport: 40000 + index,
                        dport: 443,
                        proto: PROTO_TCP,
                    };
                    let port = s.allocate(&tb, &key, eip).unwrap();
                    assert_eq!(port % count, index, "count {count} index {index}");
                    assert!(port >= PORT_MIN);
                    assert!(seen.insert(port));
                    let r = tb
                        .insert(key, TimerClass::Established, Timestamp(0), ())
                        .unwrap();
                    tb.set_snat(r, eip, port).unwrap();
                }
            }
        }
    }

    #[test]
    fn exhaustion_is_reported() {
        let s = Snat::new(&gw()).unwrap();
        let eip = v4(192, 0, 2, 1);
        let mut tb: Table<()> = Table::new(70_000, Timeouts::default());
        let mut n = 0u32;
        loop {
            let key = FlowKey {
                src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)),
                dst: v4(203, 0, 113, 5),
                sport: 5000,
                dport: 443,
                proto: PROTO_TCP,
            };
            let Some(p) = s.allocate(&tb, &key, eip) else {
                break;
            };
            let r = tb
                .insert(key, TimerClass::Established, Timestamp(0), ())
                .unwrap();
            tb.set_snat(r, eip, p).unwrap();
            n += 1;
            assert!(n <= 64_513);
        }
        // Probing is bounded, so the allocator may give up a little before the last port.
        assert!(n > 60_000, "allocated {n}");
    }
}
