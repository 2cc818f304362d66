//! What names resolved to which addresses.
//!
//! Two stores:
//! - [`DnsCache`]: client-scoped answers, learned from DNS answers crossing the gateway and from
//!   the gateway's DNS forwarder, each for the client that asked ([`AnswerSource`]);
//! - [`GatewayFacts`]: the gateway's own resolution of names (rule names, refreshed by the
//!   gateway; names flows present, resolved on demand), valid for every client. Each name's
//!   address set is replaced whole by every refresh.
//!
//! Used for two things: `FlowFacts::dns_names` (rules in `dns` domain modes: the client's own
//! answers plus the gateway's), and the flow-log rule that a flow without SNI/Host to an address
//! the *same* client just resolved carries that name (`domain_source` dns).
//!
//! Bounded: at most `capacity` (address, name, client) entries and [`MAX_NAMES_PER_IP`] per
//! address; the oldest learned entry goes first. TTLs are clamped to
//! [[`MIN_TTL_SECS`], [`MAX_TTL_SECS`]] so a TTL-0 answer still explains the connection that
//! follows it. The gateway store holds at most its configured number of names and
//! [`MAX_ADDRS_PER_NAME`] addresses per name.

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

/// Addresses kept per name resolved by the gateway (as the appliance).
pub const MAX_ADDRS_PER_NAME: usize = 500;

/// Where a client-scoped answer was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerSource {
    /// A DNS answer crossing the gateway (the client asked a resolver outside).
    Crossing,
    /// An answer the gateway's DNS forwarder relayed to the client.
    Forwarder,
}

#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    /// The client that asked; `None` = the gateway itself (older callers; global).
    client: Option<IpAddr>,
    source: AnswerSource,
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

    /// Learn that `name` resolved to `ip` for `client` from an answer crossing the gateway.
    pub fn learn(
        &mut self,
        now: Timestamp,
        client: Option<IpAddr>,
        name: &str,
        ip: IpAddr,
        ttl: u32,
    ) {
        self.learn_entry(now, client, name, ip, ttl, false, AnswerSource::Crossing);
    }

    /// Learn one name of an answer crossing the gateway: `asked` when it is the question's
    /// name, not a CNAME target the chain went through (the flow log names a later flow with the
    /// asked name; rules in `dns` modes match every name of the chain).
    pub fn learn_name(
        &mut self,
        now: Timestamp,
        client: Option<IpAddr>,
        name: &str,
        ip: IpAddr,
        ttl: u32,
        asked: bool,
    ) {
        self.learn_entry(now, client, name, ip, ttl, asked, AnswerSource::Crossing);
    }

    /// Learn that `name` resolved to `ip` for `client`, seen by `source`.
    pub fn learn_from(
        &mut self,
        now: Timestamp,
        client: Option<IpAddr>,
        name: &str,
        ip: IpAddr,
        ttl: u32,
        source: AnswerSource,
    ) {
        self.learn_entry(now, client, name, ip, ttl, false, source);
    }

    /// Learn one entry: `asked` as for [`Self::learn_name`], `source` as for [`Self::learn_from`].
    #[allow(clippy::too_many_arguments)]
    pub fn learn_entry(
        &mut self,
        now: Timestamp,
        client: Option<IpAddr>,
        name: &str,
        ip: IpAddr,
        ttl: u32,
        asked: bool,
        source: AnswerSource,
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
            e.source = source;
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
            source,
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

    /// Unexpired names that resolved to `ip` in answers to `client` (and in old gateway-wide
    /// entries without a client): what the policy's `dns` modes see of this store.
    pub fn names_for_client<'a>(
        &'a self,
        now: Timestamp,
        client: IpAddr,
        ip: IpAddr,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.by_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .filter(move |e| e.expires > now && e.client.is_none_or(|c| c == client))
            .map(|e| &*e.name)
    }

    /// Where `client` learned that `name` resolves to `ip`, if it did and it is still valid.
    pub fn source_of(
        &self,
        now: Timestamp,
        client: IpAddr,
        ip: IpAddr,
        name: &str,
    ) -> Option<AnswerSource> {
        self.by_ip
            .get(&ip)?
            .iter()
            .rev()
            .find(|e| e.expires > now && e.client.is_none_or(|c| c == client) && &*e.name == name)
            .map(|e| e.source)
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

/// What the gateway knows of one name it resolved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameState {
    /// Never resolved, or the result expired.
    Unknown,
    /// Resolved: its address set is complete (possibly empty: NXDOMAIN, no A/AAAA).
    Resolved,
    /// The last resolution failed (timeout, server failure) and that is still recent.
    Failed,
}

#[derive(Debug)]
struct NameFacts {
    addrs: Box<[IpAddr]>,
    expires: Timestamp,
    failed: bool,
}

/// The gateway's own resolution results, valid for every client. Bounded by names and by
/// [`MAX_ADDRS_PER_NAME`] addresses per name.
#[derive(Debug)]
pub struct GatewayFacts {
    by_name: HashMap<Arc<str>, NameFacts>,
    by_ip: HashMap<IpAddr, Vec<Arc<str>>>,
    max_names: usize,
}

impl GatewayFacts {
    /// An empty store for at most `max_names` names.
    pub fn new(max_names: usize) -> Self {
        GatewayFacts {
            by_name: HashMap::new(),
            by_ip: HashMap::new(),
            max_names: max_names.max(1),
        }
    }

    /// Names held (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// No names.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// `name` resolves to exactly `addrs` (the first [`MAX_ADDRS_PER_NAME`]) until `now + valid`.
    /// Replaces what was known of it. Returns `false` when the store is full of other unexpired
    /// names (nothing is stored).
    pub fn set(
        &mut self,
        now: Timestamp,
        name: &str,
        addrs: &[IpAddr],
        valid: std::time::Duration,
    ) -> bool {
        let mut list: Vec<IpAddr> = addrs.iter().copied().take(MAX_ADDRS_PER_NAME).collect();
        list.sort_unstable();
        list.dedup();
        self.put(now, name, list.into_boxed_slice(), now.add(valid), false)
    }

    /// The gateway could not resolve `name` (timeout, server failure): remember that until
    /// `now + valid`, forgetting its addresses.
    pub fn set_failed(&mut self, now: Timestamp, name: &str, valid: std::time::Duration) -> bool {
        self.put(now, name, Box::new([]), now.add(valid), true)
    }

    fn put(
        &mut self,
        now: Timestamp,
        name: &str,
        addrs: Box<[IpAddr]>,
        expires: Timestamp,
        failed: bool,
    ) -> bool {
        if !self.by_name.contains_key(name) && self.by_name.len() >= self.max_names {
            self.purge(now);
            if self.by_name.len() >= self.max_names {
                return false;
            }
        }
        let key: Arc<str> = self
            .forget_keep_key(name)
            .unwrap_or_else(|| Arc::from(name));
        for ip in addrs.iter() {
            self.by_ip.entry(*ip).or_default().push(Arc::clone(&key));
        }
        self.by_name.insert(
            key,
            NameFacts {
                addrs,
                expires,
                failed,
            },
        );
        true
    }

    /// Drop `name` (a reload removed the rule that used it).
    pub fn forget(&mut self, name: &str) {
        self.forget_keep_key(name);
    }

    fn forget_keep_key(&mut self, name: &str) -> Option<Arc<str>> {
        let (key, old) = self.by_name.remove_entry(name)?;
        for ip in old.addrs.iter() {
            if let Some(list) = self.by_ip.get_mut(ip) {
                list.retain(|n| **n != *name);
                if list.is_empty() {
                    self.by_ip.remove(ip);
                }
            }
        }
        Some(key)
    }

    /// Remove every expired name.
    pub fn purge(&mut self, now: Timestamp) {
        let expired: Vec<Arc<str>> = self
            .by_name
            .iter()
            .filter(|(_, f)| f.expires <= now)
            .map(|(n, _)| Arc::clone(n))
            .collect();
        for n in expired {
            self.forget(&n);
        }
    }

    /// Unexpired names the gateway resolved to `ip`.
    pub fn names_for(&self, now: Timestamp, ip: IpAddr) -> impl Iterator<Item = &str> + '_ {
        self.by_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .filter(move |n| self.by_name.get(&***n).is_some_and(|f| f.expires > now))
            .map(|n| &**n)
    }

    /// Whether the gateway resolved `name` to `ip` (unexpired).
    pub fn has(&self, now: Timestamp, name: &str, ip: IpAddr) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|f| f.expires > now && f.addrs.binary_search(&ip).is_ok())
    }

    /// What is known of `name` now.
    pub fn state(&self, now: Timestamp, name: &str) -> NameState {
        match self.by_name.get(name) {
            Some(f) if f.expires > now && f.failed => NameState::Failed,
            Some(f) if f.expires > now => NameState::Resolved,
            _ => NameState::Unknown,
        }
    }

    /// The addresses of `name`, if resolved and unexpired.
    pub fn addrs(&self, now: Timestamp, name: &str) -> Option<&[IpAddr]> {
        self.by_name
            .get(name)
            .filter(|f| f.expires > now && !f.failed)
            .map(|f| &*f.addrs)
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

    #[test]
    fn client_scoped_names_and_sources() {
        let mut c = DnsCache::new(100);
        let t0 = Timestamp::from_secs(1000);
        let (a, b, srv) = (ip("10.0.1.10"), ip("10.0.1.11"), ip("198.51.100.10"));
        c.learn(t0, Some(a), "shop.example.test", srv, 300);
        c.learn_from(
            t0,
            Some(b),
            "fwd.example.test",
            srv,
            300,
            AnswerSource::Forwarder,
        );
        assert_eq!(
            c.names_for_client(t0, a, srv).collect::<Vec<_>>(),
            ["shop.example.test"]
        );
        assert_eq!(
            c.names_for_client(t0, b, srv).collect::<Vec<_>>(),
            ["fwd.example.test"]
        );
        assert_eq!(
            c.source_of(t0, a, srv, "shop.example.test"),
            Some(AnswerSource::Crossing)
        );
        assert_eq!(
            c.source_of(t0, b, srv, "fwd.example.test"),
            Some(AnswerSource::Forwarder)
        );
        assert_eq!(c.source_of(t0, a, srv, "fwd.example.test"), None);
    }

    #[test]
    fn gateway_facts_replace_bound_and_expire() {
        use std::time::Duration;
        let mut g = GatewayFacts::new(2);
        let t0 = Timestamp::from_secs(100);
        let (x, y) = (ip("198.51.100.1"), ip("198.51.100.2"));
        assert_eq!(g.state(t0, "a.test"), NameState::Unknown);
        assert!(g.set(t0, "a.test", &[x, y], Duration::from_secs(60)));
        assert_eq!(g.state(t0, "a.test"), NameState::Resolved);
        assert!(g.has(t0, "a.test", x));
        assert_eq!(g.names_for(t0, y).collect::<Vec<_>>(), ["a.test"]);
        // A refresh replaces the set: y is no longer an address of a.test.
        assert!(g.set(t0, "a.test", &[x], Duration::from_secs(60)));
        assert!(!g.has(t0, "a.test", y));
        assert_eq!(g.names_for(t0, y).count(), 0);
        // Bound on names: a third name is refused while both others are valid.
        assert!(g.set(t0, "b.test", &[y], Duration::from_secs(10)));
        assert!(!g.set(t0, "c.test", &[y], Duration::from_secs(60)));
        assert_eq!(g.len(), 2);
        // ... and taken once one expired.
        let t1 = Timestamp::from_secs(111);
        assert_eq!(g.state(t1, "b.test"), NameState::Unknown);
        assert!(g.set(t1, "c.test", &[y], Duration::from_secs(60)));
        assert_eq!(g.names_for(t1, y).collect::<Vec<_>>(), ["c.test"]);
        // Bound on addresses per name.
        let many: Vec<IpAddr> = (0..2000u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0xcb00_7100 + i)))
            .collect();
        assert!(g.set(t1, "c.test", &many, Duration::from_secs(60)));
        assert_eq!(
            g.addrs(t1, "c.test").map(<[_]>::len),
            Some(MAX_ADDRS_PER_NAME)
        );
        // Failure and forgetting.
        assert!(g.set_failed(t1, "a.test", Duration::from_secs(5)));
        assert_eq!(g.state(t1, "a.test"), NameState::Failed);
        assert!(!g.has(t1, "a.test", x));
        g.forget("c.test");
        assert_eq!(g.state(t1, "c.test"), NameState::Unknown);
        assert_eq!(g.names_for(t1, many[0]).count(), 0);
    }
}
