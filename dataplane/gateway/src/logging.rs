//! Daemon logging with `tracing`: levels, a filter from `NATFW_LOG` (or `RUST_LOG`), text or
//! JSON lines on stderr. Under systemd stderr goes to the journal, which adds its own
//! timestamps: text lines then carry none (`JOURNAL_STREAM` is set). Records of crates that
//! use the `log` facade (aya among them) are captured through `tracing-log`.
//!
//! Command results (`natfw status`, views, `check`) are program output, not logs: they stay on
//! stdout/stderr as they are.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The log line format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `LEVEL message key=value` (with a timestamp unless the journal adds one).
    Text,
    /// One JSON object per line: timestamp, level, target, fields.message and other fields.
    Json,
}

/// Environment variables read for the filter, first found wins.
pub const FILTER_VARS: [&str; 2] = ["NATFW_LOG", "RUST_LOG"];
/// Filter when neither variable is set.
pub const DEFAULT_FILTER: &str = "info";

/// The filter directive in effect for the given variable values.
pub fn filter_directive(natfw_log: Option<&str>, rust_log: Option<&str>) -> String {
    natfw_log
        .or(rust_log)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(DEFAULT_FILTER)
        .to_string()
}

fn build<W>(
    format: LogFormat,
    directive: &str,
    journal: bool,
    writer: W,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder()
        .parse(directive)
        .map_err(|e| format!("bad log filter `{directive}`: {e}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    Ok(match format {
        LogFormat::Json => Box::new(b.json().flatten_event(false).finish()),
        LogFormat::Text if journal => Box::new(b.without_time().with_target(false).finish()),
        LogFormat::Text => Box::new(b.with_target(false).finish()),
    })
}

/// Install the global subscriber (once per process) and the `log` bridge.
pub fn init(format: LogFormat) -> Result<(), String> {
    let var = |k: &str| std::env::var(k).ok();
    let directive = filter_directive(
        var(FILTER_VARS[0]).as_deref(),
        var(FILTER_VARS[1]).as_deref(),
    );
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let sub = build(format, &directive, journal, std::io::stderr)?;
    tracing::subscriber::set_global_default(sub).map_err(|e| e.to_string())?;
    // `log` records (aya, rustls) become tracing events; their level filter is the subscriber's.
    tracing_log::LogTracer::init().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn natfw_log_wins_over_rust_log_and_info_is_the_default() {
        assert_eq!(filter_directive(Some("debug"), Some("warn")), "debug");
        assert_eq!(filter_directive(None, Some("warn")), "warn");
        assert_eq!(filter_directive(None, None), "info");
        assert_eq!(filter_directive(Some(" "), None), "info");
        assert!(build(LogFormat::Text, "natfw=notalevel", false, Buf::default()).is_err());
    }

    #[test]
    fn json_lines_carry_level_and_fields_and_log_records_are_captured() {
        // The bridge forwards to whichever subscriber is current for the thread.
        let _ = tracing_log::LogTracer::init();
        let buf = Buf::default();
        let sub = build(LogFormat::Json, "info,aya=warn", false, buf.clone()).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(iface = "in0", "XDP attached");
            tracing::debug!("filtered out");
            log::warn!(target: "aya::maps", "a warning from a crate using `log`");
            log::info!(target: "aya::maps", "below aya's level");
        });
        let lines: Vec<serde_json::Value> = buf
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["fields"]["message"], "XDP attached");
        assert_eq!(lines[0]["fields"]["iface"], "in0");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["target"], "aya::maps");
        assert_eq!(
            lines[1]["fields"]["message"],
            "a warning from a crate using `log`"
        );
    }

    #[test]
    fn journal_text_has_no_timestamp() {
        let buf = Buf::default();
        let sub = build(LogFormat::Text, "info", true, buf.clone()).unwrap();
        tracing::subscriber::with_default(sub, || tracing::warn!(flows = 3, "reload failed"));
        assert_eq!(buf.text(), " WARN reload failed flows=3\n");
    }
}
