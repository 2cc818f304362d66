//! `natfw check` end to end: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn natfw_check(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_natfw"))
        .arg("check")
        .arg(path)
        .output()
        .expect("run natfw");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("natfw-cli-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

const VALID: &str = "\
gateway:
  name: gw
  inside: eth1
  outside: eth2
  eips: [203.0.113.10]
  snat:
    - {name: a, source: 10.0.0.0/16}
    - {name: b, source: 10.1.0.0/16}
firewall:
  default_action: drop
  rules:
    - {name: dns, action: accept, protocol: udp, ports: 53}
    - {name: web, action: accept, protocol: tcp, ports: [80, 443]}
    - {name: web-again, action: accept, protocol: tcp, ports: 443}
";

#[test]
fn valid_config_exits_0_with_summary_and_warnings() {
    let path = temp_file("valid.yaml", VALID);
    let (code, out, err) = natfw_check(&path);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "config OK: 3 rules, 2 SNAT entries\n");
    let p = path.display();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "{p}:14:7: warning: rule `web-again` can never match"
        )),
        "{err}"
    );
}

#[test]
fn invalid_config_exits_1_with_every_error() {
    let text = VALID
        .replace(
            "eips: [203.0.113.10]",
            "eips: [203.0.113.10]\n  colour: red",
        )
        .replace("ports: 53}", "ports: \"53-50\"}");
    let path = temp_file("invalid.yaml", &text);
    let (code, out, err) = natfw_check(&path);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    let p = path.display();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with(&format!("{p}:6:3: unknown key `colour` in gateway")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{p}:13:57: ")) && lines[1].contains("reversed port range"),
        "{err}"
    );
    assert_eq!(lines[2], format!("{p}: 2 errors"));
}

#[test]
fn missing_file_exits_1() {
    let (code, _, err) = natfw_check(Path::new("/nonexistent/natfw.yaml"));
    assert_eq!(code, 1);
    assert!(
        err.starts_with("/nonexistent/natfw.yaml: cannot read"),
        "{err}"
    );
}
