/* SPDX-License-Identifier: Apache-2.0
 *
 * Packet parsing: Ethernet -> IPv4/IPv6 -> TCP/UDP/ICMP into a small tuple.
 *
 * bpf_skb_load_bytes is used instead of direct packet access because it also
 * reads non-linear skbs (GSO on veths) and needs no bounds dance; the cost is a
 * helper call per header, which is noise next to the perf write.
 */
#ifndef SPYGLASS_PARSE_H
#define SPYGLASS_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#define SG_TCP_FIN 0x01
#define SG_TCP_SYN 0x02
#define SG_TCP_RST 0x04
#define SG_TCP_ACK 0x10

#define SG_IP_MF 0x2000
#define SG_IP_OFFMASK 0x1fff

#define SG_ICMP_ECHOREPLY 0
#define SG_ICMP_ECHO 8
#define SG_ICMPV6_ECHO 128
#define SG_ICMPV6_ECHOREPLY 129
#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif

/* What the rest of the datapath needs from a packet. */
struct sg_pkt {
	__u8  saddr[16];
	__u8  daddr[16];
	__u16 sport;      /* host order; ICMP: type << 8 | code (as reported) */
	__u16 dport;      /* host order; ICMP: 0 */
	__u16 ct_sport;   /* the ports conntrack keys on (ICMP echo: id, id) */
	__u16 ct_dport;
	__u8  proto;
	__u8  tcp_flags;
	__u8  ipv6;
	__u8  pad;
	__u32 len;        /* skb->len */
	__u32 l4_off;     /* IPv4: offset of the L4 header (for NAT); 0 if none was read */
};

/* The L4 part, shared by IPv4 and IPv6. Unknown protocols keep ports 0, so
 * they are still traced and tracked per address pair. */
static __always_inline void sg_parse_l4(struct __sk_buff *skb, __u32 off, struct sg_pkt *p)
{
	__u8 buf[14];

	if (p->proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, off, buf, 14) < 0)
			return;
		p->sport = ((__u16)buf[0] << 8) | buf[1];
		p->dport = ((__u16)buf[2] << 8) | buf[3];
		p->tcp_flags = buf[13];
	} else if (p->proto == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, off, buf, 4) < 0)
			return;
		p->sport = ((__u16)buf[0] << 8) | buf[1];
		p->dport = ((__u16)buf[2] << 8) | buf[3];
	} else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		if (bpf_skb_load_bytes(skb, off, buf, 8) < 0)
			return;
		p->sport = ((__u16)buf[0] << 8) | buf[1];
		p->dport = 0;
		/* Echo request and reply share the identifier, so keying CT on
		 * (id, id) makes the reply find the request's entry reversed. */
		if (buf[0] == SG_ICMP_ECHO || buf[0] == SG_ICMP_ECHOREPLY ||
		    buf[0] == SG_ICMPV6_ECHO || buf[0] == SG_ICMPV6_ECHOREPLY) {
			if (p->proto == IPPROTO_ICMP ||
			    buf[0] == SG_ICMPV6_ECHO || buf[0] == SG_ICMPV6_ECHOREPLY) {
				__u16 id = ((__u16)buf[4] << 8) | buf[5];
				p->ct_sport = id;
				p->ct_dport = id;
			}
		}
		return;
	}
	p->ct_sport = p->sport;
	p->ct_dport = p->dport;
}

/* Returns 0 for an IP packet parsed into *p, -1 for anything else (ARP, ...),
 * which the programs pass through without an event. */
static __always_inline int sg_parse(struct __sk_buff *skb, struct sg_pkt *p)
{
	__u16 h_proto;

	p->len = skb->len;
	if (bpf_skb_load_bytes(skb, 12, &h_proto, 2) < 0)
		return -1;
	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		__u32 ihl;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		ihl = ip.ihl * 4;
		if (ihl < sizeof(ip))
			return -1;
		__builtin_memcpy(p->saddr, &ip.saddr, 4);
		__builtin_memcpy(p->daddr, &ip.daddr, 4);
		p->proto = ip.protocol;
		/* Non-first fragments carry no L4 header: trace them by address. */
		if (bpf_ntohs(ip.frag_off) & SG_IP_OFFMASK)
			return 0;
		sg_parse_l4(skb, ETH_HLEN + ihl, p);
		p->l4_off = ETH_HLEN + ihl;
		return 0;
	}
	if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		p->proto = ip6.nexthdr;
		p->ipv6 = 1;
		/* Extension headers are not walked: such packets are traced with
		 * proto = the first next-header and no ports. */
		sg_parse_l4(skb, ETH_HLEN + sizeof(ip6), p);
		return 0;
	}
	return -1;
}

#endif /* SPYGLASS_PARSE_H */
