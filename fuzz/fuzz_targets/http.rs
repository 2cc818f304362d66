//! HTTP request head: any client stream, no panic; a parsed host is normalised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natfw_engine::l7::{http, Progress};

fuzz_target!(|data: &[u8]| {
    if let Progress::Done(req) = http::request(data) {
        if let Some(host) = &req.host {
            assert_eq!(
                natfw_policy::domain::normalize(host).as_deref(),
                Some(host.as_str())
            );
        }
    }
});
