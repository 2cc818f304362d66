//! Scenario 1 in docker-compose containers (root, Docker Engine with `docker compose` or
//! `docker-compose`; SKIP otherwise): the images are built by scripts/build-images.sh with this
//! build's natfw (the Debian base is cached by content), `natfw lab compose demo --scenario 1`
//! runs the namespace lab's checks from the VPC containers through `natfw run` (XDP + AF_XDP in
//! the gateway containers) and prints the same table; everything is taken down even on failure.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_natfw");

/// Takes the compose lab down when dropped (also on panic).
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["lab", "compose", "down", "--scenario", "1"])
            .status();
    }
}

fn docker_ok() -> Result<(), String> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Err("needs root".into());
    }
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    if !info.is_ok_and(|o| o.status.success()) {
        return Err("no Docker engine".into());
    }
    natfw_lab::compose::compose_command()
        .map(|_| ())
        .map_err(|e| e.to_string())?;
    if Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("debootstrap missing (apt-get install debootstrap)".into());
    }
    Ok(())
}

#[test]
fn compose_scenario_1_end_to_end() {
    if let Err(why) = docker_ok() {
        eprintln!("SKIP compose scenario 1: {why}");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let st = Command::new("bash")
        .arg(repo.join("scripts/build-images.sh"))
        .arg(BIN)
        .current_dir(&repo)
        .status()
        .expect("build-images.sh");
    assert!(st.success(), "scripts/build-images.sh failed");
    let _down = Down;
    let o = Command::new(BIN)
        .args(["lab", "compose", "demo", "--scenario", "1"])
        .output()
        .expect("natfw lab compose demo");
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!("{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "compose demo failed");
    assert!(
        out.contains("20 checks, 20 as expected, 0 mismatches"),
        "{out}"
    );
    // The same table as the namespace lab: the allowed HTTPS check seen from the prod EIP, the
    // blocked name reset, and a flow-log record per check.
    let row = |host: &str, check: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{host:<6} {check:<28}")))
            .unwrap_or_else(|| panic!("no row {host} {check}"))
            .to_owned()
    };
    let https = row("prod", "https updates.vendor.test");
    assert!(
        https.contains("allowed  allowed  yes 198.51.100.11"),
        "{https}"
    );
    let blocked = row("test", "https blocked.example.test");
    assert!(blocked.contains("reset    reset    yes"), "{blocked}");
    assert!(
        !out.contains("flow log: no record"),
        "a check without a flow record"
    );
    drop(_down);
    let ps = Command::new("docker")
        .args(["ps", "-aq", "--filter", "name=natfw-c1-"])
        .output()
        .expect("docker ps");
    assert!(ps.stdout.is_empty(), "containers left behind");
}
