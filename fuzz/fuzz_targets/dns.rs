//! DNS message parsing and CNAME-chain resolution: no panic, bounded output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natfw_engine::l7::dns;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = dns::parse(data) {
        let r = m.resolved();
        // Every (name, address) pair comes from an address record in the message.
        assert!(r.len() <= m.answers.len() * 17);
    }
});
