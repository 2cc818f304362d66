//! Inputs the engine fuzz target once failed on, replayed with the same driver
//! (`natfw_engine::fuzzing::drive_engine`, which `fuzz/fuzz_targets/engine.rs` runs): every
//! flow must time out, nothing may panic.

use natfw_engine::fuzzing::drive_engine;

/// A ClientHello held until the identification deadline, denied in strict mode at a poll long
/// after: the tombstone lives on 10 s past that poll (the driver polls once more).
#[test]
fn held_hello_denied_at_a_late_poll() {
    let data = include_bytes!("../data/engine_fuzz_stuck_flow.bin");
    assert_eq!(drive_engine(data), 0, "every flow times out");
}
