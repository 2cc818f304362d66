//! Rust mirrors of the keys, values and config of `ebpf/natfw.bpf.c`. Layouts must match the C
//! structs byte for byte (`#[repr(C)]`, same field order and sizes).

use std::net::IpAddr;

/// Which side of the gateway an interface is (`NATFW_SIDE_*` in the C program).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum IfSide {
    Inside = 0,
    Outside = 1,
}

/// `struct natfw_config`: the single entry of the `config` array map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct XdpConfig {
    pub side: u32,
    /// TCP/UDP destination ports on an EIP that stay with the kernel (host byte order);
    /// `lo > hi` = none.
    pub kernel_port_lo: u16,
    pub kernel_port_hi: u16,
}

// SAFETY: plain old data: integers only, no padding (4 + 2 + 2 bytes).
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
}

impl Counter {
    /// Every slot, in map order.
    pub const ALL: [Counter; 9] = [
        Counter::SteeredInside,
        Counter::SteeredOutside,
        Counter::PassArp,
        Counter::PassNonIp,
        Counter::PassGateway,
        Counter::PassBypass,
        Counter::PassNotSnat,
        Counter::PassOther,
        Counter::RedirectFailed,
    ];

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
        }
    }
}

/// Counter values summed over CPUs, indexed like [`Counter::ALL`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; 9]);

impl Counters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, c) in Counter::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", c.name(), self.0[i])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_structs() {
        assert_eq!(std::mem::size_of::<XdpConfig>(), 8);
        assert_eq!(std::mem::size_of::<AddrKey>(), 16);
        let k = AddrKey::from("10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 10, 1, 2, 3]);
    }
}
