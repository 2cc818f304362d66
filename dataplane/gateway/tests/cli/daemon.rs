//! The daemon's command line: options from the environment (clap `env`), the default config and
//! token paths, log formats and filters, the generated man page.

use std::process::{Command, Output};

fn natfw(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_natfw"));
    c.args(args);
    for k in [
        "NATFW_CONFIG",
        "NATFW_LOG",
        "RUST_LOG",
        "NATFW_LOG_FORMAT",
        "NATFW_ADMIN",
        "NATFW_TOKEN_FILE",
        "NATFW_INSECURE",
        "NATFW_CA",
        "JOURNAL_STREAM",
    ] {
        c.env_remove(k);
    }
    c.envs(env.iter().copied());
    c.output().expect("run natfw")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn run_reads_the_default_config_path_or_natfw_config() {
    // No --config: the packaged default path (absent on a build machine, or not readable here).
    let o = natfw(&["run"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/etc/natfw/natfw.yaml"),
        "{}",
        stderr(&o)
    );
    let o = natfw(&["run"], &[("NATFW_CONFIG", "/nonexistent/gw.yaml")]);
    assert!(
        stderr(&o).contains("/nonexistent/gw.yaml: cannot read"),
        "{}",
        stderr(&o)
    );
    // The flag wins over the variable.
    let o = natfw(
        &["run", "--config", "/nonexistent/flag.yaml"],
        &[("NATFW_CONFIG", "/nonexistent/gw.yaml")],
    );
    assert!(
        stderr(&o).contains("/nonexistent/flag.yaml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn run_logs_json_lines_or_text_with_levels_and_honours_the_filter() {
    let cfg = ["run", "--config", "/nonexistent/gw.yaml"];
    let o = natfw(&cfg, &[("NATFW_LOG_FORMAT", "json")]);
    let line = stderr(&o);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(v["level"], "ERROR");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot read"),
        "{v}"
    );
    assert!(v["timestamp"].is_string(), "{v}");

    let o = natfw(&cfg, &[("JOURNAL_STREAM", "8:1")]);
    assert!(
        stderr(&o).starts_with("ERROR natfw run: "),
        "{}",
        stderr(&o)
    );
    // NATFW_LOG wins over RUST_LOG; `off` silences the daemon's log.
    let o = natfw(&cfg, &[("NATFW_LOG", "off"), ("RUST_LOG", "info")]);
    assert_eq!(stderr(&o), "");
    assert_eq!(o.status.code(), Some(1));
    let o = natfw(&cfg, &[("RUST_LOG", "off")]);
    assert_eq!(stderr(&o), "");
    // A bad filter is a usage error, not silence.
    let o = natfw(&cfg, &[("NATFW_LOG", "natfw=loud")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad log filter"), "{}", stderr(&o));
    let o = natfw(&["run", "--log-format", "xml"], &[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn client_options_come_from_the_environment_with_one_default_token_path() {
    let o = natfw(&["status"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/etc/natfw/admin.token"),
        "{}",
        stderr(&o)
    );
    let o = natfw(&["status"], &[("NATFW_TOKEN_FILE", "/nonexistent/tok")]);
    assert!(
        stderr(&o).starts_with("natfw: /nonexistent/tok: "),
        "{}",
        stderr(&o)
    );
    let help = natfw(&["status", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "NATFW_ADMIN",
        "NATFW_TOKEN_FILE",
        "NATFW_INSECURE",
        "NATFW_CA",
    ] {
        assert!(help.contains(&format!("[env: {var}=")), "{var}: {help}");
    }
    let help = natfw(&["run", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    for var in ["NATFW_CONFIG", "NATFW_LOG_FORMAT"] {
        assert!(help.contains(&format!("[env: {var}=")), "{var}: {help}");
    }
}

#[test]
fn man_page_is_generated_from_the_command_line() {
    let o = natfw(&["manpage"], &[]);
    assert!(o.status.success());
    let man = String::from_utf8_lossy(&o.stdout);
    assert!(man.contains(".TH natfw 1"), "{man}");
    for sub in ["check", "run", "replay", "status", "policy"] {
        assert!(man.contains(&format!("natfw\\-{sub}(1)")), "{sub}: {man}");
    }
}

/// The packaged man page (dist/natfw.1) is the one the command line generates.
#[test]
fn packaged_man_page_is_current() {
    let o = natfw(&["manpage"], &[]);
    let packaged =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/natfw.1")).unwrap();
    assert!(
        o.stdout == packaged,
        "dist/natfw.1 is stale: target/debug/natfw manpage > dist/natfw.1"
    );
}

/// The packaged config (/etc/natfw/natfw.yaml) is valid.
#[test]
fn packaged_config_checks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/natfw.yaml");
    let o = natfw(&["check", path], &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

/// Every unit in dist/ is packaged and runs the binary where the package installs it
/// (`/usr/bin/natfw`).
#[test]
fn packaged_units_run_the_packaged_binary() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../");
    let manifest = std::fs::read_to_string(format!("{root}dataplane/gateway/Cargo.toml")).unwrap();
    let mut units: Vec<String> = std::fs::read_dir(format!("{root}dist"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service"))
        .collect();
    units.sort();
    assert!(units.len() >= 2, "{units:?}");
    for unit in units {
        let asset = format!("[\"../../dist/{unit}\", \"lib/systemd/system/{unit}\", \"644\"]");
        assert!(
            manifest.contains(&asset),
            "{unit} is not in [package.metadata.deb] assets"
        );
        let text = std::fs::read_to_string(format!("{root}dist/{unit}")).unwrap();
        let execs: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("ExecStart")?.split_once('=').map(|(_, c)| c))
            .collect();
        assert!(!execs.is_empty(), "{unit} has no ExecStart");
        for cmd in execs {
            assert!(
                cmd.starts_with("/usr/bin/natfw "),
                "{unit}: `{cmd}` does not run /usr/bin/natfw"
            );
        }
    }
}
