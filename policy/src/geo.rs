//! Country of an IP address, from a MaxMind-DB-format (MMDB) file.
//!
//! The database is read once with the `maxminddb` crate and flattened into two sorted range
//! tables (IPv4 `u32`, IPv6 `u128` → country), so that a lookup is one binary search over
//! plain integers instead of a bit-by-bit tree walk plus a record decode. Both record layouts
//! are accepted: a top-level `country_code` (the shipped geo-whois-asn-country database) and
//! `country.iso_code` (GeoLite2-Country, DB-IP).
//!
//! The embedded default database is RIR data © Number Resource Organization (NRO), licensed
//! CC BY 4.0; see `NOTICE` and `policy/data/NRO_LICENSE`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ipnetwork::IpNetwork;
use maxminddb::{MaxMindDbError, Reader};
use serde::Deserialize;

use crate::model::CountryCode;

/// The database shipped inside the binary.
static EMBEDDED_MMDB: &[u8] = include_bytes!("../data/geo-whois-asn-country.mmdb");

/// Why a country database could not be loaded.
#[derive(Debug)]
pub enum GeoError {
    /// The file could not be read.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not a valid MMDB database (or a record could not be decoded).
    Format {
        origin: String,
        source: MaxMindDbError,
    },
}

impl fmt::Display for GeoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeoError::Io { path, source } => {
                write!(
                    f,
                    "cannot read country database {}: {source}",
                    path.display()
                )
            }
            GeoError::Format { origin, source } => {
                write!(f, "invalid country database {origin}: {source}")
            }
        }
    }
}

impl std::error::Error for GeoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GeoError::Io { source, .. } => Some(source),
            GeoError::Format { source, .. } => Some(source),
        }
    }
}

/// One MMDB record, either layout; unknown fields are skipped.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    country: Option<CountryRecord<'a>>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

impl Record<'_> {
    fn code(&self) -> Option<CountryCode> {
        self.country_code
            .or_else(|| self.country.as_ref().and_then(|c| c.iso_code))
            .and_then(CountryCode::new)
    }
}

/// Address integer types of a [`RangeTable`].
trait Key: Copy + Ord {
    /// The 16 most significant bits.
    fn top16(self) -> usize;
}

impl Key for u32 {
    fn top16(self) -> usize {
        (self >> 16) as usize
    }
}

impl Key for u128 {
    fn top16(self) -> usize {
        (self >> 112) as usize
    }
}

/// Sorted, non-overlapping ranges covering the whole key space: `starts[i]..starts[i+1]` has
/// country `codes[i]` (`None` = no data).
///
/// `buckets[b]` is the first `i` whose start has top 16 bits ≥ `b`, so a lookup binary
/// searches only the few starts sharing the key's top 16 bits (plus one before), instead of
/// the whole table: fewer cache misses on a table of a few hundred thousand entries.
#[derive(Debug, Clone, Default)]
struct RangeTable<K> {
    starts: Vec<K>,
    codes: Vec<Option<CountryCode>>,
    buckets: Vec<u32>,
}

impl<K: Key> RangeTable<K> {
    /// From sorted, non-overlapping inclusive ranges; `succ(end)` is `None` at the key maximum.
    fn from_sorted(
        zero: K,
        ranges: impl IntoIterator<Item = (K, K, Option<CountryCode>)>,
        succ: impl Fn(K) -> Option<K>,
    ) -> Self {
        let mut t = RangeTable {
            starts: vec![zero],
            codes: vec![None],
            buckets: Vec::new(),
        };
        // Start of the first key not yet covered; `None` once the maximum is covered.
        let mut next = Some(zero);
        for (lo, hi, cc) in ranges {
            let Some(n) = next else { break };
            if hi < n {
                continue; // overlaps what is already covered (not expected from a tree walk)
            }
            let lo = lo.max(n);
            if lo > n {
                t.push(n, None);
            }
            t.push(lo, cc);
            next = succ(hi);
        }
        if let Some(n) = next {
            t.push(n, None);
        }
        t.buckets = Vec::with_capacity((1 << 16) + 1);
        let mut i = 0;
        for b in 0..=(1usize << 16) {
            while i < t.starts.len() && t.starts[i].top16() < b {
                i += 1;
            }
            t.buckets.push(i as u32);
        }
        t
    }

    fn push(&mut self, start: K, cc: Option<CountryCode>) {
        if self.codes.last() == Some(&cc) {
            return; // same country continues
        }
        if self.starts.last() == Some(&start) {
            self.codes.pop();
            self.starts.pop();
            if self.codes.last() == Some(&cc) {
                return;
            }
        }
        self.starts.push(start);
        self.codes.push(cc);
    }

    #[inline]
    fn lookup(&self, key: K) -> Option<CountryCode> {
        let b = key.top16();
        // The answer (last start <= key) is at or after the last start of an earlier bucket
        // and before the first start of a later one.
        let lo = self
            .buckets
            .get(b)
            .map_or(0, |&i| i.saturating_sub(1) as usize);
        let hi = self
            .buckets
            .get(b + 1)
            .map_or(self.starts.len(), |&i| i as usize);
        let window = self.starts.get(lo..hi).unwrap_or(&[]);
        let i = lo + window.partition_point(|s| *s <= key);
        // starts[0] is the minimum key, so i >= 1.
        self.codes.get(i.wrapping_sub(1)).copied().flatten()
    }
}

/// Country database: IP address → ISO 3166-1 alpha-2 code.
#[derive(Debug, Clone)]
pub struct GeoDb {
    v4: RangeTable<u32>,
    v6: RangeTable<u128>,
    database_type: String,
    build_epoch: u64,
}

impl GeoDb {
    /// The database shipped in the binary, flattened once per process and shared.
    pub fn embedded() -> Arc<GeoDb> {
        static DB: OnceLock<Arc<GeoDb>> = OnceLock::new();
        DB.get_or_init(|| {
            // The embedded bytes are fixed at build time and a unit test loads them, so a
            // failure here is a build defect, not bad input.
            #[allow(clippy::expect_used)]
            let db = GeoDb::from_bytes(EMBEDDED_MMDB, "(embedded)")
                .expect("embedded country database is valid");
            Arc::new(db)
        })
        .clone()
    }

    /// The raw bytes of the embedded database (for tools and benchmarks that want to compare
    /// against a plain `maxminddb::Reader`).
    pub fn embedded_bytes() -> &'static [u8] {
        EMBEDDED_MMDB
    }

    /// Load an MMDB file.
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        let bytes = std::fs::read(path).map_err(|source| GeoError::Io {
            path: path.to_owned(),
            source,
        })?;
        GeoDb::from_bytes(&bytes, &path.display().to_string())
    }

    /// Load an MMDB image from memory; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<GeoDb, GeoError> {
        let err = |source| GeoError::Format {
            origin: origin.to_owned(),
            source,
        };
        let reader = Reader::from_source(bytes).map_err(err)?;
        let v4_all = IpNetwork::V4(
            ipnetwork::Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0)
                .map_err(|e| err(MaxMindDbError::InvalidNetwork(e)))?,
        );
        let mut v4 = Vec::new();
        for item in reader.within::<Record<'_>>(v4_all).map_err(err)? {
            let item = item.map_err(err)?;
            if let IpNetwork::V4(n) = item.ip_net {
                v4.push((
                    u32::from(n.network()),
                    u32::from(n.broadcast()),
                    item.info.code(),
                ));
            }
        }
        let mut v6 = Vec::new();
        if reader.metadata.ip_version == 6 {
            let v6_all = IpNetwork::V6(
                ipnetwork::Ipv6Network::new(Ipv6Addr::UNSPECIFIED, 0)
                    .map_err(|e| err(MaxMindDbError::InvalidNetwork(e)))?,
            );
            for item in reader.within::<Record<'_>>(v6_all).map_err(err)? {
                let item = item.map_err(err)?;
                if let IpNetwork::V6(n) = item.ip_net {
                    let lo = u128::from(n.network());
                    let hi = lo | u128::MAX.checked_shr(u32::from(n.prefix())).unwrap_or(0);
                    v6.push((lo, hi, item.info.code()));
                }
            }
        }
        // The tree walk yields networks in address order already; sorting keeps the table
        // correct for any reader.
        v4.sort_unstable_by_key(|r| r.0);
        v6.sort_unstable_by_key(|r| r.0);
        Ok(GeoDb {
            v4: RangeTable::from_sorted(0, v4, |k: u32| k.checked_add(1)),
            v6: RangeTable::from_sorted(0, v6, |k: u128| k.checked_add(1)),
            database_type: reader.metadata.database_type.clone(),
            build_epoch: reader.metadata.build_epoch,
        })
    }

    /// Country of `ip`, `None` when the database has none (private, documentation and
    /// unallocated ranges). IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are looked up as
    /// IPv4.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<CountryCode> {
        match ip {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.lookup(u32::from(v4)),
                None => self.v6.lookup(u128::from(a)),
            },
        }
    }

    /// Number of (merged) ranges in the IPv4 and IPv6 tables.
    pub fn ranges(&self) -> (usize, usize) {
        (self.v4.starts.len(), self.v6.starts.len())
    }

    /// The database's `database_type` metadata.
    pub fn database_type(&self) -> &str {
        &self.database_type
    }

    /// The database's build time, seconds since the Unix epoch.
    pub fn build_epoch(&self) -> u64 {
        self.build_epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(s: &str) -> Option<CountryCode> {
        CountryCode::new(s)
    }

    /// What maxminddb itself says for `ip` on the embedded bytes.
    fn direct(reader: &Reader<&[u8]>, ip: IpAddr) -> Option<CountryCode> {
        reader
            .lookup::<Record<'_>>(ip)
            .expect("lookup")
            .and_then(|r| r.code())
    }

    #[test]
    fn embedded_loads_and_has_both_families() {
        let t = std::time::Instant::now();
        let db = GeoDb::embedded();
        // Informational only (debug builds are slow); never asserted.
        eprintln!("embedded load (or wait for it): {:?}", t.elapsed());
        let (v4, v6) = db.ranges();
        assert!(v4 > 10_000 && v6 > 10_000, "ranges v4={v4} v6={v6}");
        assert!(!db.database_type().is_empty());
    }

    #[test]
    fn documentation_and_private_ranges_have_no_country() {
        let db = GeoDb::embedded();
        for ip in ["192.0.2.1", "10.1.2.3", "127.0.0.1", "fd00::1", "::1"] {
            assert_eq!(db.lookup(ip.parse().unwrap()), None, "{ip}");
        }
        // TEST-NET-2/-3 and 2001:db8::/32 appear in the RIR WHOIS data (APNIC), so this
        // database gives them a country (AU, JP): the table reports what the database says.
        let reader = Reader::from_source(GeoDb::embedded_bytes()).unwrap();
        for ip in ["198.51.100.7", "203.0.113.200", "2001:db8::1"] {
            let ip = ip.parse().unwrap();
            assert_eq!(db.lookup(ip), direct(&reader, ip), "{ip}");
        }
    }

    #[test]
    fn table_agrees_with_maxminddb_on_random_addresses() {
        let db = GeoDb::embedded();
        let reader = Reader::from_source(GeoDb::embedded_bytes()).unwrap();
        // xorshift64*: deterministic, no extra dependency.
        let mut s = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            s.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let (mut v4_hits, mut v6_hits) = (0, 0);
        for _ in 0..20_000 {
            let a = IpAddr::V4(Ipv4Addr::from(next() as u32));
            let want = direct(&reader, a);
            assert_eq!(db.lookup(a), want, "{a}");
            v4_hits += usize::from(want.is_some());
            // IPv6: anywhere in global unicast 2000::/3 (mostly unallocated), and near a
            // random range boundary of the table (the edges are where a flattening bug shows).
            let g = (u128::from(next()) << 64 | u128::from(next())) >> 3 | 1u128 << 125;
            let edge = db.v6.starts[next() as usize % db.v6.starts.len()];
            let near = match next() % 3 {
                0 => edge,
                1 => edge.wrapping_sub(1),
                _ => edge.wrapping_add(u128::from(next() as u16)),
            };
            for a6 in [g, near] {
                let a6 = Ipv6Addr::from(a6);
                if a6.to_ipv4_mapped().is_some() {
                    continue; // looked up as IPv4 on purpose, see `GeoDb::lookup`
                }
                let want = direct(&reader, a6.into());
                assert_eq!(db.lookup(a6.into()), want, "{a6}");
                v6_hits += usize::from(want.is_some());
            }
        }
        // The comparison must have covered real countries, not only empty space.
        assert!(v4_hits > 5_000, "v4 hits {v4_hits}");
        assert!(v6_hits > 5_000, "v6 hits {v6_hits}");
    }

    #[test]
    fn known_addresses_and_mapped_v4() {
        let db = GeoDb::embedded();
        let reader = Reader::from_source(GeoDb::embedded_bytes()).unwrap();
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "9.9.9.9",
            "2a00:1450:4001::1",
            "2001:4860::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let got = db.lookup(ip);
            assert!(got.is_some(), "{ip} has a country");
            assert_eq!(got, direct(&reader, ip), "{ip}");
        }
        let mapped: IpAddr = "::ffff:8.8.8.8".parse().unwrap();
        assert_eq!(db.lookup(mapped), db.lookup("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn range_table_fills_gaps_and_merges() {
        let t = RangeTable::from_sorted(
            0u32,
            [
                (10, 19, cc("DE")),
                (20, 29, cc("DE")),
                (40, 49, cc("FR")),
                (50, u32::MAX, None),
            ],
            |k| k.checked_add(1),
        );
        assert_eq!(t.starts, vec![0, 10, 30, 40, 50]);
        assert_eq!(t.lookup(0), None);
        assert_eq!(t.lookup(25), cc("DE"));
        assert_eq!(t.lookup(30), None);
        assert_eq!(t.lookup(49), cc("FR"));
        assert_eq!(t.lookup(u32::MAX), None);
        // Bucket edges: ranges crossing and starting on a 2^16 boundary.
        let t = RangeTable::from_sorted(
            0u32,
            [(0xffff, 0x1_0000, cc("NL")), (0x2_0000, 0x2_ffff, cc("SE"))],
            |k| k.checked_add(1),
        );
        assert_eq!(t.lookup(0xfffe), None);
        assert_eq!(t.lookup(0xffff), cc("NL"));
        assert_eq!(t.lookup(0x1_0000), cc("NL"));
        assert_eq!(t.lookup(0x1_0001), None);
        assert_eq!(t.lookup(0x1_ffff), None);
        assert_eq!(t.lookup(0x2_0000), cc("SE"));
        assert_eq!(t.lookup(0x2_ffff), cc("SE"));
        assert_eq!(t.lookup(0x3_0000), None);
        assert_eq!(t.lookup(u32::MAX), None);
    }

    #[test]
    fn open_reports_missing_file_and_garbage() {
        let e = GeoDb::open(Path::new("/nonexistent/geo.mmdb")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/geo.mmdb"), "{e}");
        let e = GeoDb::from_bytes(b"not a database", "junk").unwrap_err();
        assert!(e.to_string().contains("junk"), "{e}");
    }
}
