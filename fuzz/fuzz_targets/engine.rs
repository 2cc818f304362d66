//! The whole engine on arbitrary frames from both sides, with time moving, timers, emits and
//! shutdown: it must never panic, and flows must stay bounded and all time out. The driver is
//! `natfw_engine::fuzzing::drive_engine`, shared with the regression test
//! (`dataplane/engine/tests/engine/fuzz_regress.rs`); its docs describe the input format.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_eq!(
        natfw_engine::fuzzing::drive_engine(data),
        0,
        "every flow times out"
    );
});
