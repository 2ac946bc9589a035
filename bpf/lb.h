/* SPDX-License-Identifier: Apache-2.0
 *
 * Service load balancing: the pure half (NAT rewrites and the record of what
 * the LB step decided). The map lookups are in datapath.c because bcc
 * rewrites map calls only in the main source file.
 *
 * Only IPv4 TCP and UDP are translated. The rewrite keeps checksums right
 * incrementally: the IP header checksum with bpf_l3_csum_replace, and the L4
 * checksum with bpf_l4_csum_replace, BPF_F_PSEUDO_HDR for the address (it is
 * part of the pseudo-header) and plain for the port. For UDP,
 * BPF_F_MARK_MANGLED_0 leaves a zero ("no checksum") alone and turns a
 * computed zero into 0xffff, as RFC 768 requires. Both helpers also handle
 * CHECKSUM_PARTIAL skbs (a local socket's packets on a veth), where the field
 * holds only the pseudo-header sum.
 */
#ifndef SPYGLASS_LB_H
#define SPYGLASS_LB_H

#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "parse.h"
#include "ct.h"

/* What the LB step found for this packet (sg_xlate.kind). */
#define SG_XL_NONE 0
#define SG_XL_FWD 1        /* client -> VIP at the client's from_container: DNAT it */
#define SG_XL_TO_BACKEND 2 /* an already translated packet arriving at the backend */
#define SG_XL_REPLY 3      /* backend -> client reply of a translated connection */

#define SG_DROP_INVALID_PACKET 134
#define SG_DROP_SERVICE_BACKEND_NOT_FOUND 158

/* Refresh an LB entry's last_seen at most this often: a write per packet
 * would bounce the entry's cache line between CPUs for nothing. */
#define SG_LB_TOUCH_NS (1000ULL * 1000000ULL)

struct sg_xlate {
	__u32 service_id;
	__u32 slot;
	__u8  vip[4];         /* the service address the client uses */
	__u8  backend[4];
	__u16 vport;
	__u16 bport;
	__u8  kind;           /* SG_XL_* */
	__u8  new_conn;       /* FWD: write the LB entries once policy allows */
	__u8  affinity;       /* FWD: remember the backend for the client (ClientIP) */
	__u8  pad;
};

static __always_inline __u32 sg_addr4(const __u8 *a)
{
	__u32 v;

	__builtin_memcpy(&v, a, 4);
	return v;
}

/* Rewrite the destination (dst = 1) or source address and port of an IPv4
 * TCP/UDP packet. Returns < 0 if a helper failed (the packet may then be
 * half-rewritten and must be dropped). Addresses and ports as on the wire. */
static __always_inline int sg_nat4(struct __sk_buff *skb, const struct sg_pkt *p, int dst,
				   __u32 old_addr, __u32 new_addr, __u16 old_port,
				   __u16 new_port)
{
	__u32 addr_off = ETH_HLEN + (dst ? offsetof(struct iphdr, daddr)
					 : offsetof(struct iphdr, saddr));
	__u32 port_off = p->l4_off + (dst ? 2 : 0);
	__u32 csum_off;
	__u64 mangled = 0;

	if (!p->l4_off)
		return -1;
	if (p->proto == IPPROTO_TCP) {
		csum_off = p->l4_off + offsetof(struct tcphdr, check);
	} else if (p->proto == IPPROTO_UDP) {
		csum_off = p->l4_off + offsetof(struct udphdr, check);
		mangled = BPF_F_MARK_MANGLED_0;
	} else {
		return -1;
	}
	if (old_addr != new_addr) {
		if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
					BPF_F_PSEUDO_HDR | mangled | 4) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old_addr,
					new_addr, 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0) < 0)
			return -1;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0) < 0)
			return -1;
	}
	return 0;
}

/* The LB conntrack key of a tuple (addresses as on the wire, ports host order). */
static __always_inline void sg_lb_key(struct sg_ct_key *k, const __u8 *saddr, __u16 sport,
				      const __u8 *daddr, __u16 dport, __u8 proto)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->saddr, saddr, 4);
	__builtin_memcpy(k->daddr, daddr, 4);
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
}

#endif /* SPYGLASS_LB_H */
