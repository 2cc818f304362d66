//! The gateway pair fails over (root, keepalived installed; SKIP otherwise): two gateways with the
//! same policy, keepalived (VRRP) moving the VPC next hop and the EIP, `natfw health` tracked.
//! Under a new HTTP connection every 100 ms the active gateway's natfw is killed with SIGKILL:
//! the standby must take over (holds the EIP, new connections succeed through it), no packet
//! with a VPC source may reach the internet segment (tcpdump there, with a positive control on
//! the EIP), and the flow records of both gateways must account for every successful connection
//! except those whose records the killed process may still have held (ended within a second
//! before the kill) — none logged twice, all with the EIP. The failover time is printed, not
//! asserted. Namespace tag `natfw-h1-*`, torn down even on failure.

use std::path::Path;
use std::time::Duration;

use natfw_lab::ha::{failover, HaLab};

#[test]
fn ha_pair_fails_over_under_traffic() {
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("SKIP ha failover: {why}");
        return;
    }
    let has_keepalived = std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .is_ok();
    if !has_keepalived {
        eprintln!("SKIP ha failover: keepalived missing (scripts/lab-deps.sh)");
        return;
    }
    let mut ha = HaLab::up("h1", Path::new(env!("CARGO_BIN_EXE_natfw"))).expect("HA lab up");
    assert!(ha.holder().is_some(), "one gateway holds the EIP");
    let standby = 1 - ha.holder().unwrap();
    assert!(
        ha.natfw_pid(standby).is_none(),
        "the standby runs no natfw (its guard drops)"
    );
    let f = failover(&mut ha, Duration::from_secs(5), Duration::from_secs(7)).expect("failover");
    eprintln!("{}\nkeepalived transitions:\n{}", f.render(), ha.events());
    assert!(f.took_over(), "the standby did not take over: {f:?}");
    assert!(f.ok_after > 0);
    assert_eq!(
        f.leaked, 0,
        "packets with a VPC source reached the internet"
    );
    assert!(
        f.from_eip > 0,
        "the capture saw nothing from the EIP (positive control)"
    );
    assert_eq!(f.wrong_snat, 0);
    assert_eq!(
        f.rec_both, 0,
        "connections logged by both gateways: {:#?}",
        f.both
    );
    assert_eq!(
        f.unexplained, 0,
        "successful connections without a flow record: {:?}",
        f.unaccounted
    );
    // The killed gateway's records of flows that ended before the kill are on disk.
    assert!(f.rec_a + f.rec_b > 0);
    let killed_recs = if f.killed == "gwa" { f.rec_a } else { f.rec_b };
    assert!(killed_recs > 0, "no record from the killed gateway");
    assert!(f.ok > f.failed, "{f:?}");
}
