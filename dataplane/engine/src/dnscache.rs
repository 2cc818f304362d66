//! What names resolved to which addresses: learned from DNS answers crossing the gateway (scoped
//! to the client that asked) and from the gateway's own resolution of rule domains (global).
//!
//! Used for two things: `FlowFacts::dns_names` (rules in `dns` domain modes), and the flow-log
//! rule that a flow without SNI/Host to an address the *same* client just resolved carries that
//! name (`domain_source` dns).
//!
//! Bounded: at most `capacity` (address, name, client) entries and [`MAX_NAMES_PER_IP`] per
//! address; the oldest learned entry goes first. TTLs are clamped to
//! [[`MIN_TTL_SECS`], [`MAX_TTL_SECS`]] so a TTL-0 answer still explains the connection that
//! follows it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use crate::time::Timestamp;

/// Names kept per address (CDN addresses serve many names).
pub const MAX_NAMES_PER_IP: usize = 16;
/// Shortest lifetime of an entry.
pub const MIN_TTL_SECS: u32 = 30;
/// Longest lifetime of an entry.
pub const MAX_TTL_SECS: u32 = 86_400;

#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    /// The client that asked; `None` = the gateway's own resolution (global).
    client: Option<IpAddr>,
    expires: Timestamp,
    /// Insertion serial, to match the FIFO queue.
    serial: u64,
    /// The name the client asked for (the question), not a CNAME target on the way.
    asked: bool,
}

/// The bounded cache.
#[derive(Debug)]
pub struct DnsCache {
    by_ip: HashMap<IpAddr, Vec<Entry>>,
    /// (address, serial) in insertion order, for capacity eviction.
    order: VecDeque<(IpAddr, u64)>,
    len: usize,
    capacity: usize,
    serial: u64,
}

impl DnsCache {
    /// An empty cache for at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        DnsCache {
            by_ip: HashMap::new(),
            order: VecDeque::new(),
            len: 0,
            capacity: capacity.max(1),
            serial: 0,
        }
    }

    /// Number of entries (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Learn that `name` resolved to `ip` for `client` (`None`: the gateway itself).
    pub fn learn(
        &mut self,
        now: Timestamp,
        client: Option<IpAddr>,
        name: &str,
        ip: IpAddr,
        ttl: u32,
    ) {
        self.learn_name(now, client, name, ip, ttl, false);
    }

    /// Learn one name of an answer: `asked` when it is the question's name, not a CNAME target
    /// the chain went through (the flow log names a later flow with the asked name; rules in
    /// `dns` modes match every name of the chain).
    pub fn learn_name(
        &mut self,
        now: Timestamp,
        client: Option<IpAddr>,
        name: &str,
        ip: IpAddr,
        ttl: u32,
        asked: bool,
    ) {
        let ttl = ttl.clamp(MIN_TTL_SECS, MAX_TTL_SECS);
        let expires = now.add(std::time::Duration::from_secs(u64::from(ttl)));
        self.serial += 1;
        let serial = self.serial;
        let list = self.by_ip.entry(ip).or_default();
        if let Some(e) = list
            .iter_mut()
            .find(|e| e.client == client && &*e.name == name)
        {
            e.expires = e.expires.max(expires);
            e.asked |= asked;
            return;
        }
        // Drop expired names of this address first, then the oldest if still full.
        let before = list.len();
        list.retain(|e| e.expires > now);
        if list.len() >= MAX_NAMES_PER_IP {
            list.remove(0);
        }
        let removed = before - list.len();
        list.push(Entry {
            name: Arc::from(name),
            client,
            expires,
            serial,
            asked,
        });
        self.len = self.len + 1 - removed;
        self.order.push_back((ip, serial));
        while self.len > self.capacity {
            self.evict_oldest();
        }
        // The queue can hold stale serials of entries removed above; keep it bounded too.
        while self.order.len() > 2 * self.capacity {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        let Some((ip, serial)) = self.order.pop_front() else {
            return;
        };
        if let Some(list) = self.by_ip.get_mut(&ip) {
            if let Some(pos) = list.iter().position(|e| e.serial == serial) {
                list.remove(pos);
                self.len -= 1;
            }
            if list.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }

    /// Every unexpired name that resolved to `ip`, for any client (rule `dns` modes).
    pub fn names_for(&self, now: Timestamp, ip: IpAddr) -> impl Iterator<Item = &str> + '_ {
        self.by_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .filter(move |e| e.expires > now)
            .map(|e| &*e.name)
    }

    /// The name `client` most recently asked for and got `ip` (through any CNAME chain), if
    /// still valid, else the most recent name of any kind (flow-log `dns`).
    pub fn name_for_client(&self, now: Timestamp, client: IpAddr, ip: IpAddr) -> Option<&str> {
        let list = self.by_ip.get(&ip)?;
        let valid = |e: &&Entry| e.client == Some(client) && e.expires > now;
        list.iter()
            .rev()
            .filter(valid)
            .find(|e| e.asked)
            .or_else(|| list.iter().rev().find(valid))
            .map(|e| &*e.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn client_scoped_and_global() {
        let mut c = DnsCache::new(100);
        let t0 = Timestamp::from_secs(1000);
        let a = ip("10.0.1.10");
        let b = ip("10.0.1.11");
        let srv = ip("198.51.100.10");
        c.learn(t0, Some(a), "shop.example.test", srv, 300);
        c.learn(t0, None, "rule.example.test", srv, 300);
        assert_eq!(c.name_for_client(t0, a, srv), Some("shop.example.test"));
        assert_eq!(c.name_for_client(t0, b, srv), None);
        let mut all: Vec<_> = c.names_for(t0, srv).collect();
        all.sort_unstable();
        assert_eq!(all, ["rule.example.test", "shop.example.test"]);
        let later = Timestamp::from_secs(1000 + 301);
        assert_eq!(c.name_for_client(later, a, srv), None);
        assert_eq!(c.names_for(later, srv).count(), 0);
    }

    /// asked → CNAME → CNAME → address: a later flow is named with the asked name whichever
    /// order the names were learned in; rules see the whole chain.
    #[test]
    fn asked_name_wins_over_cname_targets() {
        let mut c = DnsCache::new(100);
        let t0 = Timestamp::from_secs(10);
        let a = ip("10.0.1.10");
        let srv = ip("203.0.113.50");
        c.learn_name(t0, Some(a), "www.shop.test", srv, 60, true);
        c.learn_name(t0, Some(a), "shop.cdn.test", srv, 60, false);
        c.learn_name(t0, Some(a), "edge7.cdn.test", srv, 60, false);
        assert_eq!(c.name_for_client(t0, a, srv), Some("www.shop.test"));
        let mut all: Vec<_> = c.names_for(t0, srv).collect();
        all.sort_unstable();
        assert_eq!(all, ["edge7.cdn.test", "shop.cdn.test", "www.shop.test"]);
        // Learned again later as a target only: still named by what was asked.
        c.learn_name(t0, Some(a), "shop.cdn.test", srv, 60, false);
        assert_eq!(c.name_for_client(t0, a, srv), Some("www.shop.test"));
    }

    #[test]
    fn ttl_zero_is_clamped() {
        let mut c = DnsCache::new(10);
        let t0 = Timestamp::from_secs(5);
        c.learn(t0, Some(ip("10.0.0.1")), "x.test", ip("203.0.113.1"), 0);
        let t1 = Timestamp::from_secs(5 + u64::from(MIN_TTL_SECS) - 1);
        assert_eq!(
            c.name_for_client(t1, ip("10.0.0.1"), ip("203.0.113.1")),
            Some("x.test")
        );
    }

    #[test]
    fn bounded() {
        let mut c = DnsCache::new(1000);
        let t0 = Timestamp::from_secs(1);
        for i in 0..10_000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400 + (i % 3000)));
            c.learn(t0, None, &format!("n{i}.test"), addr, 600);
            assert!(c.len() <= 1000);
        }
        assert_eq!(c.len(), 1000);
        // Per-address bound.
        let one = ip("203.0.113.9");
        for i in 0..100 {
            c.learn(t0, None, &format!("cdn{i}.test"), one, 600);
        }
        assert_eq!(c.names_for(t0, one).count(), MAX_NAMES_PER_IP);
        // The newest survive.
        assert!(c.names_for(t0, one).any(|n| n == "cdn99.test"));
        assert!(c.order.len() <= 2000);
    }
}
