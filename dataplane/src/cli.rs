//! Command-line parsing and dispatch.

/// Run the CLI; returns the process exit code.
pub fn main() -> i32 {
    0
}
