//! Domain names: normalisation and the compiled domain matcher ([`DomainSet`]).

use rustc_hash::FxHashMap;

use crate::model::DomainPattern;

/// Normalise a domain name for matching: lower case, trailing dot removed, IDNA (Unicode) to
/// punycode. Returns `None` for something that is not a valid host name (empty, too long,
/// bad label, an IP literal is returned as-is lower-cased so callers can detect it).
/// Normalising is idempotent: a returned name normalises to itself.
pub fn normalize(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    // Bounds the IDNA work; the limit that matters is checked on the result below.
    if name.is_empty() || name.len() > MAX_INPUT {
        return None;
    }
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        let mut a = idna::domain_to_ascii(name).ok()?;
        // A Unicode full stop (U+3002 …) at the end maps to '.': one trailing dot, as above.
        if a.ends_with('.') {
            a.pop();
        }
        a
    };
    // The length is a property of the wire form: punycode can make a name under 253 bytes of
    // UTF-8 longer than 253, and the result must itself be a normalised name (normalising is
    // idempotent, which the http fuzz target checks).
    let valid = !ascii.is_empty()
        && ascii.len() <= 253
        && ascii.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(ascii)
}

/// Longest input considered: a 253-byte name in full-width Unicode is three bytes a character.
const MAX_INPUT: usize = 3 * 253;

/// A set of domain patterns, each carrying a payload (typically a rule id), compiled for
/// lookup: exact names in one hash map, `*.suffix` wildcards in another keyed by the suffix.
///
/// A lookup costs one hash probe for the exact name plus at most one per label boundary of
/// the query (a name has few labels), independent of the number of patterns: a suffix is
/// only probed if some wildcard has a suffix of that length, which usually leaves one probe. Every matching pattern's
/// payloads are reported: a name can match several patterns (`a.example.com` matches both
/// `a.example.com` and `*.example.com`).
#[derive(Debug, Clone)]
pub struct DomainSet<T> {
    exact: FxHashMap<Box<str>, Payloads<T>>,
    wildcard: FxHashMap<Box<str>, Payloads<T>>,
    /// Bit `min(len, 255)` is set when some wildcard suffix is `len` bytes long: a suffix
    /// of another length cannot be in `wildcard`, so it is not hashed nor probed.
    wildcard_lens: [u64; 4],
}

/// A pattern's payloads; the usual single one inline, saving a pointer chase per hit.
#[derive(Debug, Clone)]
enum Payloads<T> {
    One([T; 1]),
    Many(Vec<T>),
}

impl<T> Payloads<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Payloads::One(one) => one,
            Payloads::Many(v) => v,
        }
    }

    fn push(&mut self, payload: T) {
        match self {
            Payloads::Many(v) => v.push(payload),
            Payloads::One(_) => {
                if let Payloads::One([first]) =
                    std::mem::replace(self, Payloads::Many(Vec::with_capacity(2)))
                {
                    *self = Payloads::Many(vec![first, payload]);
                }
            }
        }
    }
}

/// The [`DomainSet::wildcard_lens`] bit of a suffix length.
fn len_bit(len: usize) -> (usize, u64) {
    let l = len.min(255);
    (l / 64, 1 << (l % 64))
}

impl<T> Default for DomainSet<T> {
    fn default() -> Self {
        DomainSet {
            exact: FxHashMap::default(),
            wildcard: FxHashMap::default(),
            wildcard_lens: [0; 4],
        }
    }
}

impl<T> DomainSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `pattern` with `payload`. Patterns may repeat; each insertion's payload is reported.
    pub fn insert(&mut self, pattern: &DomainPattern, payload: T) {
        let (map, key) = match pattern {
            DomainPattern::Exact(name) => (&mut self.exact, name),
            DomainPattern::Wildcard(suffix) => {
                let (w, bit) = len_bit(suffix.len());
                self.wildcard_lens[w] |= bit;
                (&mut self.wildcard, suffix)
            }
        };
        match map.get_mut(key.as_str()) {
            Some(v) => v.push(payload),
            None => {
                map.insert(key.as_str().into(), Payloads::One([payload]));
            }
        }
    }

    /// Number of distinct patterns.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// True when no pattern was inserted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Call `f` with the payloads of every pattern that matches `name` (exactly the patterns
    /// for which [`DomainPattern::matches`] is true), exact pattern first, then wildcards from
    /// the longest suffix to the shortest.
    pub fn for_each_match<'s>(&'s self, name: &str, mut f: impl FnMut(&'s [T])) {
        if let Some(v) = self.exact.get(name) {
            f(v.as_slice());
        }
        if self.wildcard.is_empty() {
            return;
        }
        // `*.s` matches `name` iff name = x + "." + s with x non-empty: try every dot that has
        // at least one byte before it.
        for (i, b) in name.bytes().enumerate().skip(1) {
            if b == b'.' {
                let (w, bit) = len_bit(name.len() - i - 1);
                if self.wildcard_lens[w] & bit == 0 {
                    continue;
                }
                if let Some(v) = self.wildcard.get(&name[i + 1..]) {
                    f(v.as_slice());
                }
            }
        }
    }

    /// Does any pattern match `name`?
    pub fn contains(&self, name: &str) -> bool {
        let mut hit = false;
        self.for_each_match(name, |_| hit = true);
        hit
    }

    /// The payloads of every matching pattern, in [`DomainSet::for_each_match`] order.
    pub fn matches(&self, name: &str) -> Vec<&T> {
        let mut out = Vec::new();
        self.for_each_match(name, |v| out.extend(v.iter()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{normalize, DomainSet};
    use crate::model::DomainPattern;
    use proptest::prelude::*;

    #[test]
    fn normalises_case_dot_and_idna() {
        assert_eq!(
            normalize("WWW.Example.COM.").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            normalize("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("a..b"), None);
        assert_eq!(normalize("bad name"), None);
        assert_eq!(
            normalize("example\u{3002}com\u{3002}").as_deref(),
            Some("example.com")
        );
    }

    #[test]
    fn length_is_checked_on_the_punycode_form() {
        // Four 57-byte labels ending in 'é' are 231 bytes of UTF-8 but 255 in punycode.
        let label = format!("{}é", "a".repeat(55));
        let name = [label.as_str(); 4].join(".");
        assert!(name.len() <= 253);
        assert_eq!(normalize(&name), None);
        let three = [label.as_str(); 3].join(".");
        let n = normalize(&three).expect("191 bytes of punycode");
        assert_eq!(normalize(&n).as_deref(), Some(n.as_str()));
    }

    fn pat(s: &str) -> DomainPattern {
        match s.strip_prefix("*.") {
            Some(suffix) => DomainPattern::Wildcard(suffix.into()),
            None => DomainPattern::Exact(s.into()),
        }
    }

    #[test]
    fn exact_and_wildcard_matches() {
        let mut set = DomainSet::new();
        for (i, p) in [
            "example.com",
            "*.example.com",
            "a.example.com",
            "*.a.example.com",
            "*.com",
        ]
        .iter()
        .enumerate()
        {
            set.insert(&pat(p), i);
        }
        set.insert(&pat("example.com"), 9);
        let ids = |n: &str| set.matches(n).into_iter().copied().collect::<Vec<_>>();
        assert_eq!(ids("example.com"), vec![0, 9, 4]);
        assert_eq!(ids("a.example.com"), vec![2, 1, 4]);
        assert_eq!(ids("b.a.example.com"), vec![3, 1, 4]);
        assert_eq!(ids("xexample.com"), vec![4]);
        assert_eq!(ids("com"), Vec::<usize>::new());
        assert_eq!(ids("example.org"), Vec::<usize>::new());
        assert!(!set.contains(".com"));
        assert_eq!(set.len(), 5);
    }

    proptest! {
        /// Whatever `normalize` returns normalises to itself (mixed ASCII, Unicode dots and
        /// letters whose punycode is longer than their UTF-8).
        #[test]
        fn normalising_is_idempotent(name in "[a-zA-Z0-9_.é\u{3002}\u{FF21}ü-]{0,300}") {
            if let Some(n) = normalize(&name) {
                prop_assert_eq!(normalize(&n), Some(n.clone()));
            }
        }

        /// The compiled set reports exactly the patterns `DomainPattern::matches` accepts, for
        /// arbitrary (even malformed) names over a tiny alphabet so that they collide.
        #[test]
        fn agrees_with_pattern_matches(
            pats in proptest::collection::vec("(\\*\\.)?[ab.]{0,5}", 0..12),
            names in proptest::collection::vec("[ab.]{0,7}", 1..8),
        ) {
            let pats: Vec<DomainPattern> = pats.iter().map(|p| pat(p)).collect();
            let mut set = DomainSet::new();
            for (i, p) in pats.iter().enumerate() {
                set.insert(p, i);
            }
            for n in &names {
                let mut got: Vec<usize> = set.matches(n).into_iter().copied().collect();
                got.sort_unstable();
                let want: Vec<usize> = (0..pats.len()).filter(|&i| pats[i].matches(n)).collect();
                prop_assert_eq!(got, want, "name {:?}", n);
            }
        }
    }
}
