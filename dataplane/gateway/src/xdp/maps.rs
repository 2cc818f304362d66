//! Rust mirrors of the keys, values and config of `ebpf/natfw.h` (shared by the eBPF programs).
//! Layouts must match the C structs byte for byte (`#[repr(C)]`, same field order and sizes);
//! a test compiles the header with the system C compiler and compares sizes and offsets.

use std::net::IpAddr;

/// Which side of the gateway an interface is (`NATFW_SIDE_*` in the C program).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum IfSide {
    Inside = 0,
    Outside = 1,
}

/// `NATFW_WORKERS_MAX`: split mode's most packet workers (slow-path veth pairs per side).
pub const WORKERS_MAX: usize = 8;

/// `struct natfw_config`: the single entry of the `config` array map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct XdpConfig {
    pub side: u32,
    /// TCP/UDP destination ports on an EIP that stay with the kernel (host byte order);
    /// `lo > hi` = none.
    pub kernel_port_lo: u16,
    pub kernel_port_hi: u16,
    /// Split mode: packet workers, 1..=[`WORKERS_MAX`] (0 is taken as 1).
    pub workers: u32,
    /// Split mode: the real interface, where what the engine transmits leaves.
    pub wire_ifindex: u32,
    /// Split mode, per worker: the kernel end of its slow-path veth pair on this side, where
    /// `natfw_steer` sends (0: dropped; all 0 in classic mode).
    pub slow_kernel_ifindex: [u32; WORKERS_MAX],
    /// Split mode, per worker: the XDP end of that pair, where `natfw_slow` runs.
    pub slow_xdp_ifindex: [u32; WORKERS_MAX],
}

// SAFETY: plain old data: integers only, no padding (4 + 2 + 2 + 4 + 4 + 8 * 4 + 8 * 4 bytes,
// every field at a multiple of its alignment).
unsafe impl aya::Pod for XdpConfig {}

/// `struct addr_key`: an address of either family, IPv4 as IPv4-mapped IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct AddrKey {
    pub addr: [u8; 16],
}

// SAFETY: a byte array, no padding.
unsafe impl aya::Pod for AddrKey {}

impl From<IpAddr> for AddrKey {
    fn from(ip: IpAddr) -> Self {
        let addr = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        AddrKey { addr }
    }
}

/// Slots of the per-CPU `counters` array (`enum natfw_counter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Counter {
    SteeredInside = 0,
    SteeredOutside,
    PassArp,
    PassNonIp,
    PassGateway,
    PassBypass,
    PassNotSnat,
    PassOther,
    RedirectFailed,
    /// A packet of an offloaded flow that the engine must see (SYN, FIN or RST): steered.
    FastToEngine,
    /// tc: translated and redirected in the kernel (the fast path).
    FastForwarded,
    /// tc: the rewrite failed: dropped.
    FastError,
    /// tc: to worker 0's slow path (split mode; with one worker, every packet to the slow path).
    SteeredWorker0,
    SteeredWorker1,
    SteeredWorker2,
    SteeredWorker3,
    SteeredWorker4,
    SteeredWorker5,
    SteeredWorker6,
    SteeredWorker7,
    /// tc: a copy to every worker's slow path (fragments, ICMP errors, IPv6 extension
    /// headers, no readable L4 header), counted once.
    SteeredBroadcast,
}

/// Number of counter slots (`C_MAX`).
pub const COUNTERS: usize = 21;

impl Counter {
    /// Every slot, in map order.
    pub const ALL: [Counter; COUNTERS] = [
        Counter::SteeredInside,
        Counter::SteeredOutside,
        Counter::PassArp,
        Counter::PassNonIp,
        Counter::PassGateway,
        Counter::PassBypass,
        Counter::PassNotSnat,
        Counter::PassOther,
        Counter::RedirectFailed,
        Counter::FastToEngine,
        Counter::FastForwarded,
        Counter::FastError,
        Counter::SteeredWorker0,
        Counter::SteeredWorker1,
        Counter::SteeredWorker2,
        Counter::SteeredWorker3,
        Counter::SteeredWorker4,
        Counter::SteeredWorker5,
        Counter::SteeredWorker6,
        Counter::SteeredWorker7,
        Counter::SteeredBroadcast,
    ];

    /// The slot "steered to worker `w`'s slow path" (`None` above [`WORKERS_MAX`]).
    pub fn steered_worker(w: usize) -> Option<Counter> {
        (w < WORKERS_MAX).then(|| Counter::ALL[Counter::SteeredWorker0 as usize + w])
    }

    /// The worker a "steered to worker" slot counts for.
    pub fn worker(self) -> Option<usize> {
        (self as usize)
            .checked_sub(Counter::SteeredWorker0 as usize)
            .filter(|w| *w < WORKERS_MAX)
    }

    /// A slot of the split-mode worker distribution (per worker or broadcast): it moves in
    /// addition to the `steered_*` slot of the same packet.
    pub fn is_distribution(self) -> bool {
        self.worker().is_some() || self == Counter::SteeredBroadcast
    }

    /// Name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Counter::SteeredInside => "steered_inside",
            Counter::SteeredOutside => "steered_outside",
            Counter::PassArp => "pass_arp",
            Counter::PassNonIp => "pass_non_ip",
            Counter::PassGateway => "pass_gateway",
            Counter::PassBypass => "pass_bypass",
            Counter::PassNotSnat => "pass_not_snat",
            Counter::PassOther => "pass_other",
            Counter::RedirectFailed => "redirect_failed",
            Counter::FastToEngine => "fastpath_to_engine",
            Counter::FastForwarded => "fastpath_forwarded",
            Counter::FastError => "fastpath_error",
            Counter::SteeredWorker0 => "steered_worker0",
            Counter::SteeredWorker1 => "steered_worker1",
            Counter::SteeredWorker2 => "steered_worker2",
            Counter::SteeredWorker3 => "steered_worker3",
            Counter::SteeredWorker4 => "steered_worker4",
            Counter::SteeredWorker5 => "steered_worker5",
            Counter::SteeredWorker6 => "steered_worker6",
            Counter::SteeredWorker7 => "steered_worker7",
            Counter::SteeredBroadcast => "steered_broadcast",
        }
    }
}

/// Counter values summed over CPUs, indexed like [`Counter::ALL`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; COUNTERS]);

impl Counters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// Workers that have a "steered to worker" count: up to the highest one above 0, at
    /// least worker 0 (the exporter's `worker` label values).
    pub fn workers_seen(&self) -> usize {
        (0..WORKERS_MAX)
            .rev()
            .find(|w| Counter::steered_worker(*w).is_some_and(|c| self.get(c) > 0))
            .map_or(1, |w| w + 1)
    }
}

/// The log line: every slot, but of the per-worker ones only those of
/// [`Counters::workers_seen`].
impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seen = self.workers_seen();
        let mut first = true;
        for (i, c) in Counter::ALL.iter().enumerate() {
            if c.worker().is_some_and(|w| w >= seen) {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{}={}", c.name(), self.0[i])?;
        }
        Ok(())
    }
}

/// `struct natfw_offload_key`: a flow's IPv4 tuple as it arrives on one interface (network
/// byte order, as the bytes lie in the packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct OffloadKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub pad: [u8; 3],
}

// SAFETY: byte arrays and a byte, no implicit padding (16 bytes, alignment 1).
unsafe impl aya::Pod for OffloadKey {}

/// `NATFW_OFFLOAD_MAX`: entries of each side's `offload` and `offload6` maps.
pub const OFFLOAD_MAX: u32 = 262_144;

/// `NATFW_REWRITE_SRC`: rewrite the source (SNAT, inside).
pub const REWRITE_SRC: u8 = 0;
/// `NATFW_REWRITE_DST`: rewrite the destination (reverse NAT, outside).
pub const REWRITE_DST: u8 = 1;

/// `struct natfw_offload_val`: the rewrite and where the packet leaves, and the counters the
/// tc program keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct OffloadVal {
    pub new_addr: [u8; 4],
    pub new_port: [u8; 2],
    pub rewrite: u8,
    pub pad: u8,
    pub egress_ifindex: u32,
    pub pad2: u32,
    pub packets: u64,
    pub bytes: u64,
    pub last_ns: u64,
}

// SAFETY: integers and byte arrays laid out without implicit padding (4+2+1+1+4+4+8+8+8 = 40
// bytes, every u64 at a multiple of 8).
unsafe impl aya::Pod for OffloadVal {}

/// `struct natfw_offload6_key`: a flow's IPv6 tuple as it arrives on one interface (the
/// `offload6` maps; network byte order, as the bytes lie in the packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Offload6Key {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub pad: [u8; 3],
}

// SAFETY: byte arrays and a byte, no implicit padding (40 bytes, alignment 1).
unsafe impl aya::Pod for Offload6Key {}

/// `struct natfw_offload6_val`: [`OffloadVal`] with a 16-byte address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Offload6Val {
    pub new_addr: [u8; 16],
    pub new_port: [u8; 2],
    pub rewrite: u8,
    pub pad: u8,
    pub egress_ifindex: u32,
    pub packets: u64,
    pub bytes: u64,
    pub last_ns: u64,
}

// SAFETY: integers and byte arrays laid out without implicit padding (16+2+1+1+4+8+8+8 = 48
// bytes, the u32 at 20, every u64 at a multiple of 8).
unsafe impl aya::Pod for Offload6Val {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_mapped() {
        let k = AddrKey::from("10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 10, 1, 2, 3]);
    }

    fn ebpf_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ebpf")
    }

    /// Sizes, offsets and constants of `ebpf/natfw.h` as the system C compiler lays them out,
    /// against the Rust mirrors. Skipped (with the reason) when no C compiler runs.
    #[test]
    fn layouts_match_natfw_h() {
        use aya::maps::lpm_trie::Key;
        use std::mem::{offset_of, size_of};
        let rust: Vec<(&str, usize)> = vec![
            ("sizeof struct natfw_config", size_of::<XdpConfig>()),
            ("offsetof natfw_config side", offset_of!(XdpConfig, side)),
            (
                "offsetof natfw_config kernel_port_lo",
                offset_of!(XdpConfig, kernel_port_lo),
            ),
            (
                "offsetof natfw_config kernel_port_hi",
                offset_of!(XdpConfig, kernel_port_hi),
            ),
            (
                "offsetof natfw_config workers",
                offset_of!(XdpConfig, workers),
            ),
            (
                "offsetof natfw_config wire_ifindex",
                offset_of!(XdpConfig, wire_ifindex),
            ),
            (
                "offsetof natfw_config slow_kernel_ifindex",
                offset_of!(XdpConfig, slow_kernel_ifindex),
            ),
            (
                "offsetof natfw_config slow_xdp_ifindex",
                offset_of!(XdpConfig, slow_xdp_ifindex),
            ),
            ("NATFW_WORKERS_MAX", WORKERS_MAX),
            ("sizeof struct addr_key", size_of::<AddrKey>()),
            ("offsetof addr_key addr", offset_of!(AddrKey, addr)),
            ("sizeof struct lpm_v4_key", size_of::<Key<[u8; 4]>>()),
            ("sizeof struct lpm_v6_key", size_of::<Key<[u8; 16]>>()),
            ("sizeof struct natfw_offload_key", size_of::<OffloadKey>()),
            (
                "offsetof natfw_offload_key src",
                offset_of!(OffloadKey, src),
            ),
            (
                "offsetof natfw_offload_key dst",
                offset_of!(OffloadKey, dst),
            ),
            (
                "offsetof natfw_offload_key sport",
                offset_of!(OffloadKey, sport),
            ),
            (
                "offsetof natfw_offload_key dport",
                offset_of!(OffloadKey, dport),
            ),
            (
                "offsetof natfw_offload_key proto",
                offset_of!(OffloadKey, proto),
            ),
            ("sizeof struct natfw_offload_val", size_of::<OffloadVal>()),
            (
                "offsetof natfw_offload_val new_addr",
                offset_of!(OffloadVal, new_addr),
            ),
            (
                "offsetof natfw_offload_val new_port",
                offset_of!(OffloadVal, new_port),
            ),
            (
                "offsetof natfw_offload_val rewrite",
                offset_of!(OffloadVal, rewrite),
            ),
            (
                "offsetof natfw_offload_val egress_ifindex",
                offset_of!(OffloadVal, egress_ifindex),
            ),
            (
                "offsetof natfw_offload_val packets",
                offset_of!(OffloadVal, packets),
            ),
            (
                "offsetof natfw_offload_val bytes",
                offset_of!(OffloadVal, bytes),
            ),
            (
                "offsetof natfw_offload_val last_ns",
                offset_of!(OffloadVal, last_ns),
            ),
            ("sizeof struct natfw_offload6_key", size_of::<Offload6Key>()),
            (
                "offsetof natfw_offload6_key src",
                offset_of!(Offload6Key, src),
            ),
            (
                "offsetof natfw_offload6_key dst",
                offset_of!(Offload6Key, dst),
            ),
            (
                "offsetof natfw_offload6_key sport",
                offset_of!(Offload6Key, sport),
            ),
            (
                "offsetof natfw_offload6_key dport",
                offset_of!(Offload6Key, dport),
            ),
            (
                "offsetof natfw_offload6_key proto",
                offset_of!(Offload6Key, proto),
            ),
            ("sizeof struct natfw_offload6_val", size_of::<Offload6Val>()),
            (
                "offsetof natfw_offload6_val new_addr",
                offset_of!(Offload6Val, new_addr),
            ),
            (
                "offsetof natfw_offload6_val new_port",
                offset_of!(Offload6Val, new_port),
            ),
            (
                "offsetof natfw_offload6_val rewrite",
                offset_of!(Offload6Val, rewrite),
            ),
            (
                "offsetof natfw_offload6_val egress_ifindex",
                offset_of!(Offload6Val, egress_ifindex),
            ),
            (
                "offsetof natfw_offload6_val packets",
                offset_of!(Offload6Val, packets),
            ),
            (
                "offsetof natfw_offload6_val bytes",
                offset_of!(Offload6Val, bytes),
            ),
            (
                "offsetof natfw_offload6_val last_ns",
                offset_of!(Offload6Val, last_ns),
            ),
            ("NATFW_OFFLOAD_MAX", OFFLOAD_MAX as usize),
            ("NATFW_REWRITE_SRC", REWRITE_SRC as usize),
            ("NATFW_REWRITE_DST", REWRITE_DST as usize),
            ("NATFW_SIDE_INSIDE", IfSide::Inside as usize),
            ("NATFW_SIDE_OUTSIDE", IfSide::Outside as usize),
        ];
        let mut c = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"natfw.h\"\n");
        c.push_str("int main(void) {\n");
        for (what, _) in &rust {
            let expr = match what.split(' ').collect::<Vec<_>>()[..] {
                ["sizeof", "struct", name] => format!("sizeof(struct {name})"),
                ["offsetof", st, field] => format!("offsetof(struct {st}, {field})"),
                [constant] => format!("(size_t)({constant})"),
                _ => unreachable!("{what}"),
            };
            c.push_str(&format!("    printf(\"%zu\\n\", {expr});\n"));
        }
        c.push_str("    return 0;\n}\n");
        let dir = tempfile::tempdir().unwrap();
        let (src, exe) = (dir.path().join("layout.c"), dir.path().join("layout"));
        std::fs::write(&src, c).unwrap();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let built = std::process::Command::new(&cc)
            .arg("-I")
            .arg(ebpf_dir())
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .output();
        let built = match built {
            Ok(o) => o,
            Err(e) => {
                eprintln!("SKIP layouts_match_natfw_h: no C compiler ({cc}: {e})");
                return;
            }
        };
        assert!(
            built.status.success(),
            "{cc} on natfw.h: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let out = std::process::Command::new(&exe).output().unwrap();
        let c_values: Vec<usize> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(c_values.len(), rust.len());
        let differ: Vec<String> = rust
            .iter()
            .zip(&c_values)
            .filter(|((_, r), c)| r != *c)
            .map(|((what, r), c)| format!("{what}: C {c}, Rust {r}"))
            .collect();
        assert!(differ.is_empty(), "{}", differ.join("\n"));
    }

    /// The `SPDX-License-Identifier` of the eBPF sources and the license string the program
    /// declares to the kernel (`LICENSE[]`) say the same thing.
    #[test]
    fn spdx_and_license_section_agree() {
        // SPDX expression -> the kernel's license string for it (the GPL-2.0 alternative is
        // the one the kernel is told about; it knows no string for Apache-2.0).
        let kernel_string = |spdx: &str| match spdx {
            "GPL-2.0-only" | "(GPL-2.0-only OR Apache-2.0)" => Some("GPL v2"),
            "GPL-2.0-or-later" => Some("GPL"),
            "(GPL-2.0-only OR BSD-2-Clause)" | "(GPL-2.0-only OR BSD-3-Clause)" => {
                Some("Dual BSD/GPL")
            }
            "(GPL-2.0-only OR MIT)" => Some("Dual MIT/GPL"),
            _ => None,
        };
        let spdx_of = |text: &str| {
            let line = text.lines().next().unwrap_or_default();
            let at = line.find("SPDX-License-Identifier: ")?;
            Some(
                line[at + "SPDX-License-Identifier: ".len()..]
                    .trim_end_matches("*/")
                    .trim()
                    .to_string(),
            )
        };
        let prog = std::fs::read_to_string(ebpf_dir().join("natfw.bpf.c")).unwrap();
        let header = std::fs::read_to_string(ebpf_dir().join("natfw.h")).unwrap();
        let spdx = spdx_of(&prog).expect("natfw.bpf.c starts with an SPDX line");
        assert_eq!(spdx_of(&header).as_deref(), Some(spdx.as_str()), "natfw.h");
        let decl = prog
            .lines()
            .find(|l| l.starts_with("char LICENSE[]"))
            .expect("LICENSE[] in natfw.bpf.c");
        let declared = decl
            .split_once('=')
            .and_then(|(_, v)| v.split('"').nth(1))
            .expect("LICENSE[] = \"...\"");
        assert_eq!(
            Some(declared),
            kernel_string(&spdx),
            "SPDX {spdx} vs LICENSE[] \"{declared}\""
        );
    }
}
