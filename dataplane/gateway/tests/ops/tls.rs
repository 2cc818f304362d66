//! The admin API over TLS (rustls) on loopback: a certificate signed by a test CA made with the
//! `openssl` command (SKIP without it); the client verifies it with `--ca`, or not at all with
//! `--insecure`; the token is still required.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use natfw_gateway::admin::http::{call, server_tls, ClientTls, Server};
use natfw_gateway::admin::{api_handler, Control, Token};

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// CA + server certificate for IP 127.0.0.1; `None` if openssl is unavailable.
pub(super) fn make_certs(dir: &Path) -> Option<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ok = openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=natfw test CA",
                "-days",
                "2",
            ],
        ]
        .concat(),
    ) && openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=natfw admin",
            ],
        ]
        .concat(),
    ) && std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .is_ok()
        && openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.crt",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
    ok.then_some(())
}

#[test]
fn https_admin_api_verifies_the_server_and_still_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    if make_certs(dir.path()).is_none() {
        eprintln!("SKIP ops_tls: the openssl command is not available");
        return;
    }
    let text = "gateway:\n  name: gw-tls\n  inside: in0\n  outside: out0\n  eips: [192.0.2.1]\n  snat:\n    - {name: all, source: 10.0.0.0/8}\n";
    let (cfg, _) = natfw_gateway::admin::load("natfw.yaml", text).expect("config");
    let policy = Arc::new(arc_swap::ArcSwap::from_pointee(
        natfw_policy::compile::CompiledPolicy::new(&cfg.firewall),
    ));
    let control = Arc::new(Control::new(cfg, "natfw.yaml".into(), policy));
    let tls = server_tls(&dir.path().join("srv.crt"), &dir.path().join("srv.key")).expect("tls");
    let api = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        Some(tls),
        api_handler(control, Token::new("tls-token")),
    )
    .unwrap();
    let url = format!("https://{}", api.addr);
    let ca = ClientTls::Ca(dir.path().join("ca.crt"));

    let (s, b) = call(
        &url,
        "GET",
        "/v1/status",
        Some("tls-token"),
        None,
        Some(&ca),
    )
    .unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("gw-tls"));
    let (s, _) = call(&url, "GET", "/v1/status", None, None, Some(&ca)).unwrap();
    assert_eq!(s, 401);
    let (s, _) = call(
        &url,
        "GET",
        "/v1/status",
        Some("tls-token"),
        None,
        Some(&ClientTls::Insecure),
    )
    .unwrap();
    assert_eq!(s, 200);
    // A CA that did not sign the server's certificate: the handshake fails.
    let wrong = ClientTls::Ca(dir.path().join("srv.crt"));
    assert!(call(
        &url,
        "GET",
        "/v1/status",
        Some("tls-token"),
        None,
        Some(&wrong)
    )
    .is_err());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = format!("http://{}", api.addr);
    assert!(call(&plain, "GET", "/v1/status", Some("tls-token"), None, None).is_err());
    api.stop();
}
