//! HTTP/2 cleartext: the first request's authority (connection preface, frames, HPACK) and the
//! authority watch fed in chunks. Input: mode byte, chunk size byte, then bytes. Mode 0 wraps
//! the bytes as one HEADERS block after the preface (the HPACK decoder sees them raw); mode 1
//! puts the preface in front; otherwise the bytes are the stream as is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natfw_engine::l7::h2::{self, H2Watch, WatchStep};

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, rest @ ..] = data else {
        return;
    };
    let mut stream = Vec::new();
    match mode % 3 {
        0 => {
            stream.extend_from_slice(h2::PREFACE);
            let len = rest.len().min(0xff_ffff) as u32;
            stream.extend_from_slice(&len.to_be_bytes()[1..]);
            stream.extend_from_slice(&[1, 0x4, 0, 0, 0, 1]);
            stream.extend_from_slice(&rest[..len as usize]);
        }
        1 => {
            stream.extend_from_slice(h2::PREFACE);
            stream.extend_from_slice(rest);
        }
        _ => stream.extend_from_slice(rest),
    }
    let _ = h2::request(&stream);
    let mut w = H2Watch::new(Some("a.example.test".into()));
    for c in stream.chunks(usize::from(*chunk).max(1)) {
        let step = w.push(c);
        assert!(w.held_bytes() <= 2 * (h2::MAX_HEADER_BLOCK + 16_384 + 9) + 64);
        if matches!(step, WatchStep::Violation(_) | WatchStep::Done) {
            break;
        }
    }
});
