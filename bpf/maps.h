/* SPDX-License-Identifier: Apache-2.0
 *
 * The datapath's maps and the structs userspace writes into them.
 *
 * bpf/maps.py mirrors every struct here with ctypes; the datapath test checks
 * the mirror against the sizes bcc derives from this file, so keep the two in
 * step. All maps are named sg_* and pinned by bpf/datapath.py under the pin dir.
 */
#ifndef SPYGLASS_MAPS_H
#define SPYGLASS_MAPS_H

#include "spyglass_event.h"

/* Every stateful map is pinned under SG_PIN_DIR (bpf/datapath.py passes it) and reused by
 * the next load: a restarted agent gets the same conntrack, policy, services and counters,
 * so the datapath never loses state while no agent runs. */
#ifndef SG_PIN_DIR
#error "SG_PIN_DIR must name the pin directory (bpf/datapath.py defines it)"
#endif
#define SG_PIN_PATH(n) SG_PIN_DIR "/" #n
#define SG_MAP(type, key, leaf, name, size) \
	BPF_TABLE_PINNED(type, key, leaf, name, size, SG_PIN_PATH(name))
#define SG_LPM(key, leaf, name, size) \
	BPF_TABLE_PINNED7("lpm_trie", key, leaf, name, size, SG_PIN_PATH(name), BPF_F_NO_PREALLOC)

#ifndef SG_CT_SIZE
#define SG_CT_SIZE 65536
#endif
#ifndef SG_ENDPOINTS_SIZE
#define SG_ENDPOINTS_SIZE 4096
#endif
#ifndef SG_IPCACHE_SIZE
#define SG_IPCACHE_SIZE 16384
#endif
#ifndef SG_POLICY_SIZE
#define SG_POLICY_SIZE 65536
#endif
#ifndef SG_POLICY_SELECTED_SIZE
#define SG_POLICY_SELECTED_SIZE 16384
#endif
#ifndef SG_SERVICES_SIZE
#define SG_SERVICES_SIZE 65536
#endif
#ifndef SG_BACKENDS_SIZE
#define SG_BACKENDS_SIZE 262144
#endif
#ifndef SG_LB_CT_SIZE
#define SG_LB_CT_SIZE 131072
#endif
#ifndef SG_LB_AFFINITY_SIZE
#define SG_LB_AFFINITY_SIZE 65536
#endif

#include "ct.h"      /* struct sg_ct_key, which sg_lb_ct shares; needs SG_CT_SIZE */

/* Reserved identities (Cilium's numbers). */
#define SG_IDENTITY_WORLD 2

/* sg_ipcache key family (Cilium's ENDPOINT_KEY_IPV4/6). */
#define SG_FAMILY_IPV4 1
#define SG_FAMILY_IPV6 2

/* sg_ipcache / sg_endpoints flags */
#define SG_EPF_LOCAL 0x0001    /* the address belongs to an endpoint on this node */

/* sg_endpoints: host-side veth ifindex -> the endpoint behind it. */
struct sg_endpoint_info {
	__u16 ep_id;
	__u16 flags;
	__u32 identity;
	__u32 ipv4;           /* network byte order */
};

/* sg_ipcache: longest-prefix match on the remote address. prefixlen counts
 * the family byte and padding (32 bits) plus the address prefix, so an IPv4
 * /24 is stored with prefixlen 56 and never matches an IPv6 key. */
struct sg_ipcache_key {
	__u32 prefixlen;
	__u8  family;         /* SG_FAMILY_* */
	__u8  pad[3];
	__u8  addr[16];
};

struct sg_ipcache_value {
	__u32 identity;
	__u16 ep_id;
	__u16 flags;
};

/* sg_config.flags */
#define SG_CFG_POLICY_AUDIT 0x0001   /* every endpoint in policy audit mode */

/* sg_config[0]: runtime knobs that userspace may change while attached. */
struct sg_config {
	__u32 agg_level;      /* 0 = report every packet; non-zero = active-CT aggregation */
	__u32 flags;          /* SG_CFG_* */
	__u64 interval_ns;    /* aggregation: report a busy slot at least this often */
};

/* sg_policy_allow / sg_policy_deny: LPM tries over the bytes
 *   local_identity(32, BE) | direction(8) | remote_identity(32, BE) | proto(8) | dport(16, BE)
 * Everything is big-endian because the trie compares prefixes from the first
 * byte's most significant bit on: only then do "the first n bits of the port"
 * mean a port range. prefixlen 72 = any proto and port, 80 = this proto and
 * any port, 80 + n = this proto and the port's first n bits (96 = one port).
 * Remote "any" is the identity 0 (an exact value, looked up second). */
#define SG_POLICY_KEY_BYTES 12
#define SG_POLICY_PREFIX_ANY_PROTO 72

struct sg_policy_key {
	__u32 prefixlen;
	__u8  data[SG_POLICY_KEY_BYTES];
};

/* The entry's prefixlen is kept in the value because an LPM lookup returns
 * only the value, and the match type (L3-only vs L3-L4 ...) depends on it. */
struct sg_policy_value {
	__u32 cookie;         /* names the rule (bpf/policy/types.py), never 0 */
	__u16 prefixlen;      /* the entry's own prefix length (72..96) */
	__u16 pad;
};

/* sg_policy_selected: present iff some policy selects the identity in this
 * direction (the endpoint is default-deny there). */
struct sg_policy_sel_key {
	__u32 identity;
	__u8  direction;      /* SG_DIR_INGRESS or SG_DIR_EGRESS */
	__u8  pad[3];
};

#define SG_POLF_AUDIT 0x0001   /* denies of this identity are only reported */

struct sg_policy_sel_value {
	__u32 cookie;         /* names the selecting policies: the POLICY_DENIED cookie */
	__u32 flags;          /* SG_POLF_* */
};

/* Service load balancing (IPv4, TCP and UDP; bpf/services.py writes these).
 *
 * sg_services: {VIP, port, proto} -> the service and how many backend slots it
 * has. sg_backends: {service_id, slot} -> backend, slots 0..count-1 dense, so
 * that a random pick is prandom % count. Userspace keeps a backend in its slot
 * for as long as it stays in the service (bpf/lb_plan.py), so connections
 * and affinities of the other backends never move when one goes. */
struct sg_lb_svc_key {
	__u8  addr[4];        /* VIP, as on the wire */
	__u16 port;           /* host order */
	__u8  proto;          /* IPPROTO_TCP / IPPROTO_UDP */
	__u8  pad;
};

#define SG_SVCF_AFFINITY 0x0001   /* sessionAffinity: ClientIP */

struct sg_lb_svc_value {
	__u32 service_id;     /* never 0 */
	__u16 count;          /* backend slots; 0 = drop SERVICE_BACKEND_NOT_FOUND */
	__u16 flags;          /* SG_SVCF_* */
	__u32 affinity_s;     /* ClientIP affinity timeout in seconds */
};

struct sg_lb_backend_key {
	__u32 service_id;
	__u32 slot;
};

struct sg_lb_backend {
	__u8  addr[4];        /* pod IP, as on the wire */
	__u16 port;           /* target port, host order */
	__u16 pad;
};

/* sg_lb_ct: the NAT state of one translated connection, two entries:
 *  FWD keyed by the client's tuple (client, cport, VIP, vport): the backend it goes to;
 *  REV keyed by the backend's reply tuple (backend, bport, client, cport): the VIP
 *  that the reply is translated back to.
 * Separate from sg_ct so that conntrack's resets (policy, aggregation) never
 * lose a connection's backend. Written only after policy allowed the packet. */
#define SG_LB_FWD 1
#define SG_LB_REV 2

struct sg_lb_ct_value {
	__u64 last_seen_ns;
	__u32 service_id;
	__u32 slot;           /* FWD: the backend's slot, to check it is still there */
	__u8  addr[4];        /* FWD: backend; REV: VIP */
	__u16 port;           /* FWD: target port; REV: service port (host order) */
	__u8  kind;           /* SG_LB_FWD / SG_LB_REV */
	__u8  pad;
};

/* sg_lb_affinity: sessionAffinity ClientIP, {service, client} -> last backend. */
struct sg_lb_affinity_key {
	__u32 service_id;
	__u8  client[4];
};

struct sg_lb_affinity_value {
	__u64 last_seen_ns;
	__u32 slot;
	__u8  addr[4];
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

/* sg_reader (per CPU): what the agents delivered from this CPU's perf ring and which
 * perf_submit failures they already reported; written by userspace after each batch. */
struct sg_reader_state {
	__u64 delivered;
	__u64 failures_told;
};

/* sg_agent[0]: which agent generation runs the datapath (restarts counted here). */
struct sg_agent_info {
	__u64 generation;
	__u64 started_ns;     /* CLOCK_REALTIME of the current generation's start */
	__u64 pid;
	__u64 restarts;       /* generations that adopted a running datapath */
	__u64 unstored;       /* flows the agent read but had not written to its store yet */
};

/* Per-CPU scratch space for what does not fit the 512-byte BPF stack (bcc
 * 0.26 cannot load BPF-to-BPF calls, so every helper is inlined into one frame). */
struct sg_scratch {
	struct sg_event ev;       /* sg_emit builds the event here */
	struct sg_ct_entry ct;    /* sg_ct_commit's fresh entry */
};

/* The perf event array is the one map made afresh by every load (bcc cannot pin one):
 * the agent fills it with its per-CPU perf rings before the programs are swapped in. */
BPF_PERF_OUTPUT(sg_events);
BPF_PERCPU_ARRAY(sg_scratch, struct sg_scratch, 1);
SG_MAP("percpu_array", int, __u64, sg_submit_fail, 1);
SG_MAP("percpu_array", int, __u64, sg_submit_ok, 1);
SG_MAP("hash", __u32, struct sg_endpoint_info, sg_endpoints, SG_ENDPOINTS_SIZE);
SG_LPM(struct sg_ipcache_key, struct sg_ipcache_value, sg_ipcache, SG_IPCACHE_SIZE);
SG_MAP("array", int, struct sg_config, sg_config, 1);
SG_LPM(struct sg_policy_key, struct sg_policy_value, sg_policy_allow, SG_POLICY_SIZE);
SG_LPM(struct sg_policy_key, struct sg_policy_value, sg_policy_deny, SG_POLICY_SIZE);
SG_MAP("hash", struct sg_policy_sel_key, struct sg_policy_sel_value, sg_policy_selected,
       SG_POLICY_SELECTED_SIZE);
SG_MAP("hash", struct sg_lb_svc_key, struct sg_lb_svc_value, sg_services, SG_SERVICES_SIZE);
SG_MAP("hash", struct sg_lb_backend_key, struct sg_lb_backend, sg_backends, SG_BACKENDS_SIZE);
SG_MAP("lru_hash", struct sg_ct_key, struct sg_lb_ct_value, sg_lb_ct, SG_LB_CT_SIZE);
SG_MAP("lru_hash", struct sg_lb_affinity_key, struct sg_lb_affinity_value, sg_lb_affinity,
       SG_LB_AFFINITY_SIZE);
/* Userspace only: what agents have read (so a restart can account for what none did). */
SG_MAP("percpu_array", int, struct sg_reader_state, sg_reader, 1);
SG_MAP("array", int, struct sg_agent_info, sg_agent, 1);

#endif /* SPYGLASS_MAPS_H */
