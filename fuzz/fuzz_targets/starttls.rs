//! The STARTTLS state machine: any client and server bytes, for each protocol, whole and cut at
//! every line. Input: u16 client length, client bytes, then server bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natfw_engine::l7::starttls::{phase, Phase};
use natfw_policy::App;

fuzz_target!(|data: &[u8]| {
    let [ch, cl, rest @ ..] = data else {
        return;
    };
    let split = usize::from(u16::from_be_bytes([*ch, *cl])).min(rest.len());
    let (client, server) = rest.split_at(split);
    for app in [App::Smtp, App::Imap, App::Pop3, App::Ftp] {
        let whole = phase(app, client, server);
        match whole {
            Phase::Plain { pass } => assert!(pass <= client.len()),
            Phase::Upgraded { tls_start } => assert!(tls_start <= client.len()),
            Phase::NoUpgrade(_) => {}
        }
        // Less client input never lets more bytes pass than the whole did, and an upgrade
        // seen on a prefix is the same upgrade on the whole.
        for cut in (0..client.len()).filter(|&i| client[i] == b'\n') {
            match (phase(app, &client[..=cut], server), whole) {
                (Phase::Plain { pass: a }, Phase::Plain { pass: b }) => assert!(a <= b),
                (Phase::Upgraded { tls_start: a }, Phase::Upgraded { tls_start: b }) => {
                    assert_eq!(a, b)
                }
                (Phase::Upgraded { .. }, other) => panic!("upgrade lost with more bytes: {other:?}"),
                _ => {}
            }
        }
    }
});
