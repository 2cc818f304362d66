//! `natfw check CONFIG`: validate a configuration file without touching the system.

use std::io::Write;
use std::path::Path;

use natfw_policy::config::{self, Severity};

/// Validate `path`; warnings and errors go to `err` (one `file:line:col: message` per line),
/// the success line to `out`. Returns the exit code: 0 valid (warnings allowed), 1 invalid.
pub fn run(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    // Write errors on stdout/stderr (closed pipe) cannot be reported anywhere; the exit code
    // still says what happened.
    match config::load_file(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                let _ = writeln!(err, "{w}");
            }
            let _ = writeln!(
                out,
                "config OK: {} rules, {} SNAT entries",
                loaded.config.firewall.rules.len(),
                loaded.config.gateway.snat.len()
            );
            0
        }
        Err(diags) => {
            let _ = write!(err, "{diags}");
            let errors = diags
                .0
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            let _ = writeln!(
                err,
                "{}: {errors} error{}",
                path.display(),
                if errors == 1 { "" } else { "s" }
            );
            1
        }
    }
}
