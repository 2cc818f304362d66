//! Next-hop MAC addresses for frames the gateway sends out of AF_XDP: the kernel's neighbour
//! table (via [`crate::netlink`]) behind a small bounded cache.
//!
//! The next hop for a destination is what the kernel's routing says: the route's gateway (the
//! default router on the outside) or the destination itself (on-link, the inside). When the
//! kernel has no entry yet, a zero-byte UDP datagram to the next hop makes it resolve one; the
//! frame that needed it is dropped (counted) and the sender's retransmission finds the entry.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

/// How long a learned MAC is trusted before the kernel is asked again.
const FRESH: Duration = Duration::from_secs(10);
/// How long after a probe the kernel is not asked again for the same destination.
const PROBE_BACKOFF: Duration = Duration::from_millis(200);
/// Cache bound: past it, the cache is cleared (entries are cheap to learn again).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
enum Entry {
    Known { mac: [u8; 6], until: Instant },
    Probing { until: Instant },
}

/// Counters of the resolver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeighStats {
    pub lookups: u64,
    pub probes: u64,
    pub errors: u64,
}

/// Per-interface next-hop cache.
#[derive(Debug)]
pub struct NextHops {
    ifindex: u32,
    cache: HashMap<IpAddr, Entry>,
    pub stats: NeighStats,
}

impl NextHops {
    pub fn new(ifindex: u32) -> NextHops {
        NextHops {
            ifindex,
            cache: HashMap::new(),
            stats: NeighStats::default(),
        }
    }

    /// The MAC to send a frame for `dst` to, or `None` while it is being resolved.
    pub fn resolve(&mut self, dst: IpAddr, now: Instant) -> Option<[u8; 6]> {
        match self.cache.get(&dst) {
            Some(Entry::Known { mac, until }) if *until > now => return Some(*mac),
            Some(Entry::Probing { until }) if *until > now => return None,
            _ => {}
        }
        if self.cache.len() >= MAX_ENTRIES {
            self.cache.clear();
        }
        self.stats.lookups += 1;
        let hop = match crate::netlink::route_get(dst) {
            Ok(r) => r.gateway.unwrap_or(dst),
            Err(_) => {
                self.stats.errors += 1;
                dst
            }
        };
        match crate::netlink::neighbour(self.ifindex, hop) {
            Ok(Some(mac)) => {
                self.cache.insert(
                    dst,
                    Entry::Known {
                        mac,
                        until: now + FRESH,
                    },
                );
                Some(mac)
            }
            Ok(None) | Err(_) => {
                self.stats.probes += 1;
                probe(hop, self.ifindex);
                self.cache.insert(
                    dst,
                    Entry::Probing {
                        until: now + PROBE_BACKOFF,
                    },
                );
                None
            }
        }
    }
}

/// Make the kernel resolve `hop` (reached through interface `ifindex`): any datagram routed to
/// it starts neighbour discovery. IPv6 link-local next hops (common for default routes) need
/// the interface as scope.
pub fn probe(hop: IpAddr, ifindex: u32) {
    let (bind, to): (SocketAddr, SocketAddr) = match hop {
        IpAddr::V4(_) => (([0, 0, 0, 0], 0).into(), (hop, 9).into()),
        IpAddr::V6(v6) => {
            let scope = if v6.is_unicast_link_local() {
                ifindex
            } else {
                0
            };
            (
                ([0u16; 8], 0).into(),
                SocketAddr::V6(SocketAddrV6::new(v6, 9, 0, scope)),
            )
        }
    };
    if let Ok(s) = UdpSocket::bind(bind) {
        // Port 9 (discard). Failure (no route) just means no resolution; the caller counts.
        let _ = s.send_to(&[], to);
    }
}
