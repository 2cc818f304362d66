/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Layouts shared by the natfw eBPF programs and mirrored byte for byte by the gateway
 * (`dataplane/gateway/src/xdp/maps.rs`; a unit test there compiles this header with the system
 * C compiler and compares sizes and offsets). Change both sides together.
 */
#ifndef NATFW_H
#define NATFW_H

#include <linux/types.h>

#define NATFW_SIDE_INSIDE 0
#define NATFW_SIDE_OUTSIDE 1

#define NATFW_LPM_MAX 1024
#define NATFW_ADDR_MAX 256

struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4]; /* network byte order */
};

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* An address of either family: IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d). */
struct addr_key {
	__u8 addr[16];
};

/* XDP program config (array[1]). */
struct natfw_config {
	__u32 side;            /* NATFW_SIDE_* */
	__u16 kernel_port_lo;  /* host byte order; lo > hi = no kernel range */
	__u16 kernel_port_hi;
};

#endif
