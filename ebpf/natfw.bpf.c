// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * natfw XDP steering program.
 *
 * Attached to the inside and the outside interface (one object load per interface, because an
 * XSKMAP is keyed by RX queue and both interfaces use queue 0). It decides per packet whether
 * the natfw engine must see it (XDP_REDIRECT into the interface's AF_XDP socket) or whether the
 * kernel keeps it (XDP_PASS):
 *
 *   inside:  IPv4/IPv6 whose source is in an SNAT entry, not in the bypass list, and whose
 *            destination is neither a gateway address nor multicast/broadcast -> steer.
 *   outside: IPv4/IPv6 whose destination is an EIP -> steer, except TCP/UDP to the kernel's own
 *            port range (the gateway's own sockets and the nftables masquerade of bypassed
 *            sources use it).
 *   everything else (ARP, non-IP, IPv6 neighbour discovery on either side, traffic for the
 *   gateway) -> pass.
 *
 * A packet the program steers never reaches the kernel, so anything the engine would hand to
 * the kernel must be filtered here. A failed redirect (no socket bound yet) drops: passing an
 * SNAT-bound packet to the kernel would forward it un-translated and uninspected.
 *
 * Fast path: a TCP/UDP IPv4 packet the program would steer whose tuple is in `offload` (flows
 * the engine has decided and finished inspecting) and that carries no SYN, FIN or RST is
 * passed to the kernel instead, marked in its XDP metadata; the tc ingress program `natfw_tc`
 * of the same object (same maps) rewrites it (SNAT / reverse NAT, TTL, incremental checksums
 * valid for CHECKSUM_PARTIAL and GSO packets), counts it in the entry and redirects it out of
 * the other interface. A marked packet tc finds no entry for (removed in between) is dropped,
 * never forwarded untranslated. Everything else keeps to the engine.
 *
 * Layouts of keys, values and the config are mirrored by `dataplane/gateway/src/xdp/maps.rs`.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "natfw.h"

/* Counter slots of `counters` (keep in sync with `xdp::maps::Counter`). */
enum natfw_counter {
	C_STEERED_INSIDE = 0,
	C_STEERED_OUTSIDE,
	C_PASS_ARP,
	C_PASS_NON_IP,
	C_PASS_GATEWAY,
	C_PASS_BYPASS,
	C_PASS_NOT_SNAT,
	C_PASS_OTHER,
	C_REDIRECT_FAILED,
	C_FAST_PASS,  /* XDP: offloaded flow, passed to tc */
	C_FAST_FWD,   /* tc: rewritten and redirected */
	C_FAST_MISS,  /* tc: marked but no entry any more: dropped */
	C_FAST_ERROR, /* tc: malformed or rewrite failed: dropped */
	C_MAX,
};

#define LPM_MAX NATFW_LPM_MAX
#define ADDR_MAX NATFW_ADDR_MAX

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LPM_MAX);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
} snat_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LPM_MAX);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
} snat_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LPM_MAX);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
} bypass_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LPM_MAX);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
} bypass_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ADDR_MAX);
	__type(key, struct addr_key);
	__type(value, __u8);
} eips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ADDR_MAX);
	__type(key, struct addr_key);
	__type(value, __u8);
} gw_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct natfw_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NATFW_OFFLOAD_MAX);
	__type(key, struct natfw_offload_key);
	__type(value, struct natfw_offload_val);
} offload SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline int count(__u32 slot, int action)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &slot);
	if (c)
		*c += 1;
	return action;
}

static __always_inline void v4_mapped(struct addr_key *k, __be32 a)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->addr[10] = 0xff;
	k->addr[11] = 0xff;
	__builtin_memcpy(&k->addr[12], &a, 4);
}

static __always_inline int steer(struct xdp_md *ctx, __u32 side)
{
	/* Fallback action XDP_DROP (lower bits of flags): no socket -> drop, never leak. */
	long r = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
	if (r != XDP_REDIRECT)
		return count(C_REDIRECT_FAILED, XDP_DROP);
	return count(side == NATFW_SIDE_INSIDE ? C_STEERED_INSIDE : C_STEERED_OUTSIDE, XDP_REDIRECT);
}

/* Port range kept by the kernel on the outside (TCP/UDP destination port). */
static __always_inline int kernel_port(const struct natfw_config *cfg, __u8 proto, void *l4,
				       void *end)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	/* Both headers start with source port, destination port. */
	__be16 *ports = l4;
	if ((void *)(ports + 2) > end)
		return 0;
	__u16 dport = bpf_ntohs(ports[1]);
	return dport >= cfg->kernel_port_lo && dport <= cfg->kernel_port_hi;
}

/* An offloaded flow's packet (no VLAN tag, no IP options, not a fragment, no SYN/FIN/RST):
 * mark it for the tc program and pass it. 0: the engine must see it. */
static __always_inline int fast_v4(struct xdp_md *ctx, struct iphdr *ip, void *end)
{
	if ((void *)ip != (void *)(long)ctx->data + sizeof(struct ethhdr))
		return 0;
	if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || ip->ttl <= 1)
		return 0;
	struct natfw_offload_key k = {};
	void *l4 = (void *)(ip + 1);
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *t = l4;
		if ((void *)(t + 1) > end)
			return 0;
		if (t->syn || t->fin || t->rst)
			return 0;
		k.sport = t->source;
		k.dport = t->dest;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end)
			return 0;
		k.sport = u->source;
		k.dport = u->dest;
	} else {
		return 0;
	}
	k.src = ip->saddr;
	k.dst = ip->daddr;
	k.proto = ip->protocol;
	if (!bpf_map_lookup_elem(&offload, &k))
		return 0;
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)))
		return 0;
	__u32 *meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > (void *)(long)ctx->data)
		return 0;
	*meta = NATFW_META_FAST;
	return 1;
}

static __always_inline int handle_v4(struct xdp_md *ctx, const struct natfw_config *cfg,
				     void *l3, void *end)
{
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > end)
		return count(C_PASS_OTHER, XDP_PASS);
	struct addr_key dst;
	v4_mapped(&dst, ip->daddr);

	if (cfg->side == NATFW_SIDE_OUTSIDE) {
		if (!bpf_map_lookup_elem(&eips, &dst))
			return count(C_PASS_OTHER, XDP_PASS);
		__u32 ihl = ip->ihl * 4;
		/* Only the first fragment carries ports; later ones follow the engine. */
		if (ihl >= sizeof(*ip) && !(ip->frag_off & bpf_htons(0x1fff)) &&
		    kernel_port(cfg, ip->protocol, (void *)ip + ihl, end))
			return count(C_PASS_GATEWAY, XDP_PASS);
		if (fast_v4(ctx, ip, end))
			return count(C_FAST_PASS, XDP_PASS);
		return steer(ctx, cfg->side);
	}

	/* Multicast, limited broadcast and the gateway itself belong to the kernel. */
	__u8 d0 = dst.addr[12];
	if ((d0 & 0xf0) == 0xe0 || ip->daddr == 0xffffffff)
		return count(C_PASS_OTHER, XDP_PASS);
	if (bpf_map_lookup_elem(&gw_addrs, &dst))
		return count(C_PASS_GATEWAY, XDP_PASS);

	struct lpm_v4_key k = { .prefixlen = 32 };
	__builtin_memcpy(k.addr, &ip->saddr, 4);
	if (!bpf_map_lookup_elem(&snat_v4, &k))
		return count(C_PASS_NOT_SNAT, XDP_PASS);
	if (bpf_map_lookup_elem(&bypass_v4, &k))
		return count(C_PASS_BYPASS, XDP_PASS);
	if (fast_v4(ctx, ip, end))
		return count(C_FAST_PASS, XDP_PASS);
	return steer(ctx, cfg->side);
}

static __always_inline int handle_v6(struct xdp_md *ctx, const struct natfw_config *cfg,
				     void *l3, void *end)
{
	struct ipv6hdr *ip = l3;
	if ((void *)(ip + 1) > end)
		return count(C_PASS_OTHER, XDP_PASS);
	struct addr_key dst;
	__builtin_memcpy(dst.addr, &ip->daddr, 16);

	/* Neighbour discovery and router messages (ICMPv6 133..137) are the kernel's on both
	 * sides: a neighbour advertisement to an EIP answers the gateway's own solicitation. */
	if (ip->nexthdr == IPPROTO_ICMPV6) {
		__u8 *type = (__u8 *)(ip + 1);
		if ((void *)(type + 1) > end)
			return count(C_PASS_OTHER, XDP_PASS);
		if (*type >= 133 && *type <= 137)
			return count(C_PASS_OTHER, XDP_PASS);
	}

	if (cfg->side == NATFW_SIDE_OUTSIDE) {
		if (!bpf_map_lookup_elem(&eips, &dst))
			return count(C_PASS_OTHER, XDP_PASS);
		/* Extension headers are not walked: only a direct TCP/UDP header is checked. */
		if (kernel_port(cfg, ip->nexthdr, ip + 1, end))
			return count(C_PASS_GATEWAY, XDP_PASS);
		return steer(ctx, cfg->side);
	}

	if (dst.addr[0] == 0xff)
		return count(C_PASS_OTHER, XDP_PASS);
	if (bpf_map_lookup_elem(&gw_addrs, &dst))
		return count(C_PASS_GATEWAY, XDP_PASS);

	struct lpm_v6_key k = { .prefixlen = 128 };
	__builtin_memcpy(k.addr, &ip->saddr, 16);
	if (!bpf_map_lookup_elem(&snat_v6, &k))
		return count(C_PASS_NOT_SNAT, XDP_PASS);
	if (bpf_map_lookup_elem(&bypass_v6, &k))
		return count(C_PASS_BYPASS, XDP_PASS);
	return steer(ctx, cfg->side);
}

SEC("xdp")
int natfw_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	const struct natfw_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return count(C_PASS_OTHER, XDP_PASS);
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;

	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = l3;
		if ((void *)(vh + 1) > end)
			return count(C_PASS_OTHER, XDP_PASS);
		proto = vh->proto;
		l3 = vh + 1;
	}

	if (proto == bpf_htons(ETH_P_IP))
		return handle_v4(ctx, cfg, l3, end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return handle_v6(ctx, cfg, l3, end);
	if (proto == bpf_htons(ETH_P_ARP))
		return count(C_PASS_ARP, XDP_PASS);
	return count(C_PASS_NON_IP, XDP_PASS);
}

#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define L4_OFF (IP_OFF + sizeof(struct iphdr))

/*
 * tc ingress: translate and redirect a packet the XDP program marked as offloaded. GSO
 * super-frames (GRO on the way in) are handled whole: the checksum helpers keep
 * CHECKSUM_PARTIAL right (pseudo-header fields only), the egress device segments.
 */
SEC("classifier")
int natfw_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *meta = (void *)(long)skb->data_meta;
	if (meta + sizeof(__u32) > data || *(__u32 *)meta != NATFW_META_FAST)
		return TC_ACT_OK;

	__u32 need = L4_OFF + sizeof(struct tcphdr);
	if (data + need > (void *)(long)skb->data_end && bpf_skb_pull_data(skb, need) &&
	    bpf_skb_pull_data(skb, L4_OFF + sizeof(struct udphdr)))
		return count(C_FAST_ERROR, TC_ACT_SHOT);
	data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + IP_OFF;
	if ((void *)(ip + 1) > end || ip->ihl != 5)
		return count(C_FAST_ERROR, TC_ACT_SHOT);

	struct natfw_offload_key k = {};
	__u32 csum_off, port_off, hdr_len;
	__u64 mangled = 0;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *t = (void *)(ip + 1);
		if ((void *)(t + 1) > end)
			return count(C_FAST_ERROR, TC_ACT_SHOT);
		k.sport = t->source;
		k.dport = t->dest;
		csum_off = L4_OFF + offsetof(struct tcphdr, check);
		hdr_len = L4_OFF + t->doff * 4;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *u = (void *)(ip + 1);
		if ((void *)(u + 1) > end)
			return count(C_FAST_ERROR, TC_ACT_SHOT);
		k.sport = u->source;
		k.dport = u->dest;
		csum_off = L4_OFF + offsetof(struct udphdr, check);
		hdr_len = L4_OFF + sizeof(*u);
		mangled = BPF_F_MARK_MANGLED_0;
	} else {
		return count(C_FAST_ERROR, TC_ACT_SHOT);
	}
	k.src = ip->saddr;
	k.dst = ip->daddr;
	k.proto = ip->protocol;
	struct natfw_offload_val *v = bpf_map_lookup_elem(&offload, &k);
	if (!v)
		return count(C_FAST_MISS, TC_ACT_SHOT);
	if (ip->ttl <= 1)
		return count(C_FAST_ERROR, TC_ACT_SHOT);

	__u32 old_addr, addr_off;
	__u16 old_port;
	if (v->rewrite == NATFW_REWRITE_SRC) {
		old_addr = ip->saddr;
		old_port = k.sport;
		addr_off = IP_OFF + offsetof(struct iphdr, saddr);
		port_off = L4_OFF; /* source port */
	} else {
		old_addr = ip->daddr;
		old_port = k.dport;
		addr_off = IP_OFF + offsetof(struct iphdr, daddr);
		port_off = L4_OFF + 2; /* destination port */
	}
	__u32 new_addr = v->new_addr;
	__u16 new_port = v->new_port;
	__u16 old_ttl_word = *(__u16 *)&ip->ttl; /* ttl, protocol */
	__u8 new_ttl = ip->ttl - 1;
	__u16 new_ttl_word = old_ttl_word;
	*(__u8 *)&new_ttl_word = new_ttl;

	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
				BPF_F_PSEUDO_HDR | mangled | sizeof(new_addr)) ||
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | sizeof(new_port)) ||
	    bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) ||
	    bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ttl_word, new_ttl_word, 2) ||
	    bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0) ||
	    bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) ||
	    bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, ttl), &new_ttl, 1, 0))
		return count(C_FAST_ERROR, TC_ACT_SHOT);

	/* Wire packets and bytes: a GSO super-frame is gso_segs packets, each with headers. */
	__u32 segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	__sync_fetch_and_add(&v->packets, segs);
	__sync_fetch_and_add(&v->bytes, (__u64)skb->len + (__u64)(segs - 1) * hdr_len);
	v->last_ns = bpf_ktime_get_ns();
	count(C_FAST_FWD, 0);
	return bpf_redirect_neigh(v->egress_ifindex, NULL, 0, 0);
}

/* The kernel knows no string for the Apache-2.0 alternative: it is told the GPL-2.0 one. */
char LICENSE[] SEC("license") = "GPL v2";
