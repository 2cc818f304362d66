//! Offline operator views over flow-log files — what a console would show: log search
//! ([`logs`]), top talkers per private IP ([`top`]) and the traffic trend against the protected
//! bandwidth ([`overview`], with an SVG chart from [`svg`]).
//!
//! Every view streams the files record by record and keeps only its aggregates, so a day of
//! logs does not have to fit in memory. Lines that are not flow records are skipped and
//! counted (a log being written while it is read ends in a partial line).

pub mod logs;
pub mod overview;
pub mod svg;
pub mod top;

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::{FlowRecord, ReadError};

/// Why a view could not be produced.
#[derive(Debug)]
pub enum ViewError {
    /// A file could not be opened or read.
    Read(ReadError),
    /// Writing the output failed.
    Write(io::Error),
    /// A bad option value.
    Usage(String),
}

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewError::Read(e) => write!(f, "{e}"),
            ViewError::Write(e) => write!(f, "output: {e}"),
            ViewError::Usage(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ViewError {}

impl From<io::Error> for ViewError {
    fn from(e: io::Error) -> Self {
        ViewError::Write(e)
    }
}

/// What reading the input met on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputStats {
    /// Records read.
    pub records: u64,
    /// Lines that are not flow records.
    pub bad_lines: u64,
    /// The first such problem, `file:line: message`.
    pub first_bad: Option<String>,
}

impl InputStats {
    /// A one-line note for stderr, if anything was skipped.
    pub fn warning(&self) -> Option<String> {
        self.first_bad.as_ref().map(|first| {
            format!(
                "skipped {} line(s) that are not flow records; first: {first}",
                self.bad_lines
            )
        })
    }
}

/// Calls `f` on every record of `files`, in order. Unreadable files are errors; bad lines are
/// counted and skipped.
pub fn for_each_record(
    files: &[PathBuf],
    mut f: impl FnMut(FlowRecord) -> Result<(), ViewError>,
) -> Result<InputStats, ViewError> {
    let mut stats = InputStats::default();
    for path in files {
        for rec in crate::read_records(path).map_err(ViewError::Read)? {
            match rec {
                Ok(r) => {
                    stats.records += 1;
                    f(r)?;
                }
                Err(e @ ReadError::Io { .. }) => return Err(ViewError::Read(e)),
                Err(e) => {
                    stats.bad_lines += 1;
                    stats.first_bad.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    Ok(stats)
}

/// `1234567` → `1.2 MB` (decimal units, as link speeds are).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 999.95 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Parses a duration like `30s`, `1m`, `5m`, `1h`, `1d` (a bare number is seconds; the syntax
/// of `logging.interim_interval` too).
pub fn parse_interval(s: &str) -> Result<std::time::Duration, ViewError> {
    natfw_policy::model::parse_duration(s).map_err(ViewError::Usage)
}

/// Parses `--since`/`--until` values (see [`flowlog::parse_rfc3339`]).
pub fn parse_time(s: &str) -> Result<natfw_engine::time::Timestamp, ViewError> {
    crate::parse_rfc3339(s).ok_or_else(|| {
        ViewError::Usage(format!(
            "bad time `{s}`: want RFC 3339, e.g. 2026-11-28T17:00:00Z or 2026-11-28 17:00"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1.0 kB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(999_999), "1.0 MB");
        assert_eq!(human_bytes(u64::MAX), "18446.7 PB");
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1m").unwrap().as_secs(), 60);
        assert_eq!(parse_interval("90").unwrap().as_secs(), 90);
        assert_eq!(parse_interval("2h").unwrap().as_secs(), 7200);
        assert_eq!(parse_interval("1d").unwrap().as_secs(), 86_400);
        for bad in ["", "0s", "m", "1w", "-1m", "99999999999999999999s", "1.5m"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
