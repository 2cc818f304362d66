//! TLS ClientHello extraction: any client stream, no panic; a parsed SNI is normalised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natfw_engine::l7::{tls, Progress};

fuzz_target!(|data: &[u8]| {
    if let Progress::Done(info) = tls::client_hello(data) {
        if let Some(sni) = &info.sni {
            assert_eq!(
                natfw_policy::domain::normalize(sni).as_deref(),
                Some(sni.as_str())
            );
            assert!(!info.sni_is_ip);
        }
        // More bytes after a complete ClientHello never change the answer.
        let mut more = data.to_vec();
        more.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
        assert_eq!(tls::client_hello(&more), Progress::Done(info));
    }
});
