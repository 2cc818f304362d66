//! Regenerates `fuzz/seeds/<target>/` from the real captures in `tests/data/corpus` and
//! `tests/data/captures`:
//! `cargo test -p natfw-engine --test l7 fuzz_seeds -- --ignored`. Ignored by default
//! because it writes into the source tree.

use crate::testpcap;

use std::path::PathBuf;

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

/// (u16 length, bytes) records, as the quic target reads them.
fn records(mode: u8, recs: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![mode];
    for r in recs {
        out.extend_from_slice(&(r.len() as u16).to_be_bytes());
        out.extend_from_slice(r);
    }
    out
}

fn classify_input(proto: u8, port: u16, client: &[u8], server: &[u8]) -> Vec<u8> {
    let c = &client[..client.len().min(4096)];
    let mut out = vec![proto];
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&(c.len() as u16).to_be_bytes());
    out.extend_from_slice(c);
    out.extend_from_slice(&server[..server.len().min(4096)]);
    out
}

#[test]
#[ignore = "writes fuzz seeds into the source tree"]
fn write_fuzz_seeds() {
    let tcp = [
        "https_curl.pcap",
        "https_openssl.pcap",
        "https_chromium.pcap",
        "https_ip_literal.pcap",
        "tls_out_of_order.pcap",
        "tls_malformed_lengths.pcap",
        "http_curl.pcap",
        "http_8080.pcap",
        "ssh_2222.pcap",
    ];
    for file in tcp {
        let stem = file.trim_end_matches(".pcap");
        for (i, f) in testpcap::tcp_flows(file).iter().enumerate() {
            let name = format!("{stem}_{i}");
            let client = &f.client_stream[..f.client_stream.len().min(4096)];
            let target = if stem.starts_with("http_") {
                "http"
            } else {
                "tls"
            };
            if !stem.starts_with("ssh") {
                write(target, &name, client);
            }
            write(
                "classify",
                &name,
                &classify_input(0, f.server.port(), client, &f.server_stream),
            );
        }
    }
    let quic: Vec<Vec<u8>> = testpcap::udp_datagrams("quic_aioquic.pcap")
        .into_iter()
        .filter(|d| d.0.ip().to_string() == "10.0.1.10")
        .map(|d| d.2)
        .collect();
    let quic_refs: Vec<&[u8]> = quic.iter().map(Vec::as_slice).collect();
    write("quic", "aioquic_client", &records(0, &quic_refs));
    let chromium: Vec<Vec<u8>> = testpcap::udp_datagrams("captures/quic_chromium.pcap")
        .into_iter()
        .map(|d| d.2)
        .take(2)
        .collect();
    write(
        "quic",
        "chromium_two_initials",
        &records(0, &[&chromium[0], &chromium[1]]),
    );
    write(
        "classify",
        "quic_chromium",
        &classify_input(1, 443, &chromium[0], b""),
    );
    write(
        "classify",
        "quic_aioquic",
        &classify_input(1, 443, &quic[0], b""),
    );
    // Decrypted-frames mode: a CRYPTO frame carrying the curl ClientHello, cut in two.
    let hello = &testpcap::tcp_flows("https_curl.pcap")[0].client_stream[5..];
    let frame = |off: usize, d: &[u8]| {
        let mut f = vec![
            6,
            0x40 | (off >> 8) as u8,
            off as u8,
            0x40 | (d.len() >> 8) as u8,
            d.len() as u8,
        ];
        f.extend_from_slice(d);
        f
    };
    let (a, b) = hello.split_at(200);
    write(
        "quic",
        "frames_curl_hello",
        &records(
            1,
            &[
                &frame(200, b),
                &[&[2, 0, 0, 0, 0, 1][..], &frame(0, a)].concat(),
            ],
        ),
    );
    let rfc: String = include_str!("../../src/l7/testdata/rfc9001_a2_client_initial.hex")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect();
    let rfc: Vec<u8> = (0..rfc.len() / 2)
        .map(|i| u8::from_str_radix(&rfc[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    write("quic", "rfc9001_a2", &records(0, &[&rfc]));
    for (i, d) in testpcap::udp_datagrams("dns_query.pcap").iter().enumerate() {
        write("dns", &format!("dns_query_{i}"), &d.2);
        write(
            "classify",
            &format!("dns_{i}"),
            &classify_input(1, 53, &d.2, b""),
        );
    }
    // h2: the stream as is (mode 2), in 7-byte chunks for the watch.
    for (file, port) in [
        ("captures/h2c_prior_knowledge.pcap", 80),
        ("captures/h2c_upgrade.pcap", 8080),
    ] {
        for (i, f) in testpcap::tcp_flows(file)
            .iter()
            .filter(|f| f.server.port() == port)
            .enumerate()
        {
            // After an Upgrade request, the HTTP/2 bytes start past its head.
            let start = if port == 8080 {
                f.client_stream
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(0, |p| p + 4)
            } else {
                0
            };
            let h2 = &f.client_stream[start..];
            let mut input = vec![2, 7];
            input.extend_from_slice(&h2[..h2.len().min(8192)]);
            let name = file
                .trim_start_matches("captures/")
                .trim_end_matches(".pcap");
            write("h2", &format!("{name}_{i}"), &input);
        }
    }
    // classify: every TCP connection of our own application captures (one per client kind).
    for file in [
        "captures/memcache.pcap",
        "captures/mqtt.pcap",
        "captures/postgres.pcap",
        "captures/mongodb.pcap",
        "captures/mysql.pcap",
        "captures/redis.pcap",
        "captures/rdp.pcap",
        "captures/vnc.pcap",
        "captures/sip.pcap",
        "captures/smb.pcap",
    ] {
        let stem = file
            .trim_start_matches("captures/")
            .trim_end_matches(".pcap");
        for (i, f) in testpcap::tcp_flows(file).iter().enumerate() {
            write(
                "classify",
                &format!("{stem}_{i}"),
                &classify_input(0, f.server.port(), &f.client_stream, &f.server_stream),
            );
        }
    }
    // starttls: u16 client length, client stream, server stream.
    for (file, port) in [
        ("captures/smtp_starttls.pcap", 25),
        ("captures/smtp_starttls.pcap", 2525),
        ("captures/imap_starttls.pcap", 143),
        ("captures/pop3_stls.pcap", 110),
        ("captures/ftp_auth_tls.pcap", 21),
    ] {
        for f in testpcap::tcp_flows(file)
            .iter()
            .filter(|f| f.server.port() == port)
        {
            let c = &f.client_stream[..f.client_stream.len().min(2048)];
            let mut input = (c.len() as u16).to_be_bytes().to_vec();
            input.extend_from_slice(c);
            input.extend_from_slice(&f.server_stream[..f.server_stream.len().min(4096)]);
            write("starttls", &format!("{port}"), &input);
        }
    }
}
