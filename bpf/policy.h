/* SPDX-License-Identifier: Apache-2.0
 *
 * Policy verdicts: the pure half (key packing, match types, result record).
 *
 * The lookups themselves are in datapath.c because bcc rewrites map calls only
 * in the main source file. The rule they implement is bpf/policy/types.py's:
 *
 *   not selected in this direction -> allowed, not enforced (no verdict event)
 *   deny entry (exact remote, then remote 0) -> DROP POLICY_DENY (181)
 *   allow entry (exact remote, then remote 0) -> allowed
 *   nothing -> DROP POLICY_DENIED (133) with the "selected" record's cookie
 *
 * Within one remote the trie's longest prefix picks port over proto over any,
 * so the order is identity+port, identity+proto, identity, any+port, any+proto, any.
 */
#ifndef SPYGLASS_POLICY_H
#define SPYGLASS_POLICY_H

#include "maps.h"

/* Hubble's drop reasons and policy match types (flow.proto, api/v1/flow). */
#define SG_DROP_POLICY_DENIED 133
#define SG_DROP_POLICY_DENY 181

#define SG_MATCH_NONE 0
#define SG_MATCH_L3_ONLY 1
#define SG_MATCH_L3_L4 2
#define SG_MATCH_L4_ONLY 3
#define SG_MATCH_ALL 4

/* sg_event.verdict of a policy verdict event */
#define SG_VERDICT_ALLOWED 0
#define SG_VERDICT_DENIED 1
#define SG_VERDICT_AUDITED 2

/* What the policy step decided for one packet at one observation point. */
struct sg_policy_result {
	__u32 cookie;
	__u8  enforced;       /* the local endpoint is selected in this direction */
	__u8  allowed;        /* the packet may pass (true for audited denies too) */
	__u8  denied;         /* enforcement would drop it */
	__u8  audited;        /* denied, but only reported */
	__u8  drop_reason;    /* SG_DROP_* when denied */
	__u8  match_type;     /* SG_MATCH_* */
	__u8  pad[2];
};

static __always_inline void sg_policy_key_init(struct sg_policy_key *k, __u32 local, __u8 dir,
					       __u8 proto, __u16 dport)
{
	k->prefixlen = 96;
	k->data[0] = local >> 24;
	k->data[1] = local >> 16;
	k->data[2] = local >> 8;
	k->data[3] = local;
	k->data[4] = dir;
	k->data[9] = proto;
	k->data[10] = dport >> 8;
	k->data[11] = dport;
}

static __always_inline void sg_policy_key_remote(struct sg_policy_key *k, __u32 remote)
{
	k->data[5] = remote >> 24;
	k->data[6] = remote >> 16;
	k->data[7] = remote >> 8;
	k->data[8] = remote;
}

/* L3 = the entry names the remote identity; L4 = it names a protocol (and port). */
static __always_inline __u8 sg_policy_match_type(__u8 exact_remote, __u16 prefixlen)
{
	__u8 l4 = prefixlen > SG_POLICY_PREFIX_ANY_PROTO;

	if (exact_remote)
		return l4 ? SG_MATCH_L3_L4 : SG_MATCH_L3_ONLY;
	return l4 ? SG_MATCH_L4_ONLY : SG_MATCH_ALL;
}

#endif /* SPYGLASS_POLICY_H */
