//! Robustness on the real captures: every prefix of a stream is "need more" or the right
//! answer (never a wrong one), and byte-level corruption never panics.

use crate::testpcap;

use natfw_engine::l7::{classify, dns, http, quic, tls, Progress};
use natfw_policy::eval::IpProto;
use natfw_policy::App;

const TLS_FILES: [&str; 4] = [
    "https_curl.pcap",
    "https_openssl.pcap",
    "https_chromium.pcap",
    "tls_out_of_order.pcap",
];

#[test]
fn prefixes_never_give_a_wrong_answer() {
    for file in TLS_FILES {
        let f = &testpcap::tcp_flows(file)[0];
        let full = tls::client_hello(&f.client_stream);
        assert!(matches!(full, Progress::Done(_)), "{file}");
        let port = Some(f.server.port());
        let app = classify::classify(IpProto::Tcp, port, &f.client_stream, b"");
        for cut in 0..f.client_stream.len() {
            let p = &f.client_stream[..cut];
            let got = tls::client_hello(p);
            assert!(
                got == Progress::NeedMore || got == full,
                "{file} cut {cut}: {got:?}"
            );
            let c = classify::classify(IpProto::Tcp, port, p, b"");
            assert!(
                c == Progress::NeedMore || c == app,
                "{file} cut {cut}: {c:?}"
            );
        }
    }
    for file in ["http_curl.pcap", "http_8080.pcap"] {
        let f = &testpcap::tcp_flows(file)[0];
        let full = http::request(&f.client_stream);
        for cut in 0..f.client_stream.len() {
            let got = http::request(&f.client_stream[..cut]);
            assert!(
                got == Progress::NeedMore || got == full,
                "{file} cut {cut}: {got:?}"
            );
            let c = classify::classify(IpProto::Tcp, Some(80), &f.client_stream[..cut], b"");
            assert!(
                matches!(c, Progress::NeedMore | Progress::Done(App::Http)),
                "{file} {cut}: {c:?}"
            );
        }
    }
    let f = &testpcap::tcp_flows("ssh_2222.pcap")[0];
    for cut in 0..64 {
        let c = classify::classify(IpProto::Tcp, Some(2222), &f.client_stream[..cut], b"");
        assert!(
            matches!(c, Progress::NeedMore | Progress::Done(App::Ssh)),
            "ssh {cut}: {c:?}"
        );
    }
}

/// Deterministic xorshift, so failures reproduce.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn corrupted_inputs_never_panic() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for file in TLS_FILES.iter().chain(&[
        "http_curl.pcap",
        "ssh_2222.pcap",
        "tls_malformed_lengths.pcap",
    ]) {
        for f in testpcap::tcp_flows(file) {
            inputs.push(f.client_stream[..f.client_stream.len().min(2048)].to_vec());
        }
    }
    let udp: Vec<Vec<u8>> = ["quic_aioquic.pcap", "dns_query.pcap"]
        .iter()
        .flat_map(|f| testpcap::udp_datagrams(f))
        .map(|d| d.2)
        .collect();
    inputs.extend(udp);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut outcomes = [0usize; 3];
    for input in &inputs {
        for _ in 0..300 {
            let mut m = input.clone();
            for _ in 0..1 + rng(&mut seed) % 4 {
                let i = (rng(&mut seed) % m.len() as u64) as usize;
                m[i] = rng(&mut seed) as u8;
            }
            let t = tls::client_hello(&m);
            outcomes[match t {
                Progress::Done(_) => 0,
                Progress::NeedMore => 1,
                Progress::Invalid(_) => 2,
            }] += 1;
            let _ = http::request(&m);
            let _ = dns::parse(&m).map(|d| d.resolved());
            let _ = quic::InitialAssembler::new().push(&m);
            let _ = quic::InitialAssembler::new().push_decrypted_frames(&m);
            for proto in [IpProto::Tcp, IpProto::Udp] {
                let c = classify::classify(proto, Some(443), &m, &m[..m.len() / 2]);
                assert!(!matches!(c, Progress::Invalid(_)));
            }
        }
    }
    // The corruption must exercise all three outcomes, or this test tests nothing.
    assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
}
