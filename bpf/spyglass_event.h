/* SPDX-License-Identifier: Apache-2.0
 *
 * The event ABI between the datapath and the collector.
 *
 * Every event (trace, drop, policy verdict) is the same fixed-size struct so
 * that a perf ring holds records of one stride: 8 bytes of perf_event_header,
 * 4 bytes of raw size, then these 116 bytes = 128 bytes per record. The
 * collector can then view a whole ring read as one numpy array without walking
 * records one by one. Keep sizeof(struct sg_event) == 116; the Python mirror in
 * collector/abi.py is checked against this file by tests/test_abi.py.
 *
 * Type and subtype numbers follow Cilium's monitor ABI so that users'
 * knowledge of Hubble carries over.
 */
#ifndef SPYGLASS_EVENT_H
#define SPYGLASS_EVENT_H

#include <linux/types.h>

#define SG_EVENT_VERSION 1

/* event types: CILIUM_NOTIFY_* */
#define SG_EVENT_DROP 1
#define SG_EVENT_TRACE 4
#define SG_EVENT_POLICY_VERDICT 5

/* trace subtypes = observation points, in the monitor's numbering
 * (TRACE_TO_LXC = 0, TRACE_FROM_LXC = 5); the collector maps them to
 * Hubble's TraceObservationPoint (TO_ENDPOINT = 101, FROM_ENDPOINT = 5). */
#define SG_TRACE_TO_LXC 0
#define SG_TRACE_TO_HOST 2
#define SG_TRACE_TO_STACK 3
#define SG_TRACE_FROM_LXC 5
#define SG_TRACE_FROM_HOST 7
#define SG_TRACE_FROM_STACK 8

/* trace reasons (TRACE_REASON_*) */
#define SG_REASON_UNKNOWN 0
#define SG_REASON_CT_NEW 1
#define SG_REASON_CT_ESTABLISHED 2
#define SG_REASON_CT_REPLY 3

/* sg_event.flags */
#define SG_F_IPV6 0x01
#define SG_F_IS_REPLY 0x02
#define SG_F_REPLY_KNOWN 0x04
#define SG_F_XLATED 0x08       /* orig_daddr/orig_dport hold the pre-NAT service address */
#define SG_F_AUDITED 0x10
#define SG_F_XLATED_REPLY 0x20 /* a reply of a translated connection: orig_daddr/orig_dport
				  hold the service address the client sees as the source */

/* sg_event.direction (TRAFFIC_DIRECTION_*) */
#define SG_DIR_UNKNOWN 0
#define SG_DIR_INGRESS 1
#define SG_DIR_EGRESS 2

struct sg_event {
	/* common header */
	__u8  type;          /* SG_EVENT_* */
	__u8  subtype;       /* trace: observation point; drop: drop reason */
	__u8  version;       /* SG_EVENT_VERSION */
	__u8  flags;         /* SG_F_* */
	__u16 len;           /* sizeof(struct sg_event) */
	__u16 src_ep;        /* source endpoint id, 0 if not a local endpoint */
	__u32 ifindex;       /* interface the program runs on */
	__u32 orig_len;      /* packet length (skb->len) */
	__u64 ts_ns;         /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	/* L3/L4, parsed in the kernel; IPv4 uses the first 4 bytes */
	__u8  saddr[16];
	__u8  daddr[16];
	__u16 sport;         /* host byte order */
	__u16 dport;         /* host byte order; ICMP: type << 8 | code in sport */
	__u8  proto;         /* IPPROTO_* */
	__u8  tcp_flags;     /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80 */
	__u8  reason;        /* trace: SG_REASON_*; */
	__u8  direction;     /* SG_DIR_* */
	/* identities and endpoints */
	__u32 src_identity;
	__u32 dst_identity;
	__u16 dst_ep;        /* destination endpoint id, 0 if not local */
	__u8  match_type;    /* policy verdict: POLICY_MATCH_* (none, L3-only, L3-L4, ...) */
	__u8  verdict;       /* policy verdict: 0 allowed, 1 denied, 2 audited */
	__u32 policy_cookie; /* policy rule id, 0 = none */
	/* service translation (filled when SG_F_XLATED) */
	__u8  orig_daddr[16];
	__u16 orig_dport;
	__u16 pad0;
	__u32 service_id;
	/* monitor aggregation: packets and bytes in this direction since the last report */
	__u32 agg_packets;
	__u32 agg_bytes;     /* saturates at 0xffffffff */
	__u32 pad1;
} __attribute__((packed, aligned(4)));

#endif /* SPYGLASS_EVENT_H */
