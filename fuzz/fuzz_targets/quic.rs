//! QUIC Initial assembly. Input: a mode byte, then records of (u16 length, bytes). Even mode:
//! each record is a datagram for `push`. Odd mode: each record is a decrypted Initial payload
//! (frames) — random bytes never get through AEAD, so this is how the frame walker and CRYPTO
//! reassembly get fuzzed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natfw_engine::l7::quic::InitialAssembler;
use natfw_engine::l7::Progress;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut a = InitialAssembler::new();
    let mut last = Progress::NeedMore;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (rec, tail) = rest[2..].split_at(len);
        rest = tail;
        let _ = natfw_engine::l7::quic::is_long_header_initial(rec);
        let p = if mode % 2 == 0 {
            a.push(rec)
        } else {
            a.push_decrypted_frames(rec)
        };
        // Terminal results stick.
        if last != Progress::NeedMore {
            assert_eq!(p, last);
        }
        last = p;
    }
});
