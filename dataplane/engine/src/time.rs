//! Time as the engine sees it: given by the caller, never read from a clock inside the engine
//! (so replay, tests and the live path behave the same).

/// Wall-clock time in nanoseconds since the UNIX epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_secs(s: u64) -> Self {
        Timestamp(s * 1_000_000_000)
    }

    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms * 1_000_000)
    }

    /// Read the system clock (for callers at the I/O edge, never the engine).
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_nanos() as u64)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    pub const fn add(self, d: std::time::Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_nanos() as u64))
    }

    /// Time since `earlier`, zero if `earlier` is later.
    pub const fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}
