//! Application classification. Input: proto byte (0 TCP, 1 UDP, 2 ICMP, else other), u16 port
//! (0 = none), u16 client length, client bytes, then server bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natfw_engine::l7::{classify, Progress};
use natfw_policy::eval::IpProto;

fuzz_target!(|data: &[u8]| {
    let [p, ph, pl, ch, cl, rest @ ..] = data else {
        return;
    };
    let proto = match p {
        0 => IpProto::Tcp,
        1 => IpProto::Udp,
        2 => IpProto::Icmp,
        x => IpProto::Other(*x),
    };
    let port = u16::from_be_bytes([*ph, *pl]);
    let split = usize::from(u16::from_be_bytes([*ch, *cl])).min(rest.len());
    let (client, server) = rest.split_at(split);
    let r = classify::classify(proto, (port != 0).then_some(port), client, server);
    assert!(
        !matches!(r, Progress::Invalid(_)),
        "classify never says Invalid"
    );
});
