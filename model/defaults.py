"""Every default the lab, the datapath, the agent and the CLI share, defined once.

They used to live in three or four places each (the ring's capacity, the pod and service
CIDRs, the state and pin directories), and nothing kept the copies equal. Each layer
now reads its default from here, and the CLI's options derive from `agent.options`,
which reads them from here too.
"""

from __future__ import annotations

#: Where the lab and the agent keep their records (lab.json, the token, the ring keeper).
STATE_DIR = "/run/spyglass"
#: Where the datapath's maps are pinned (a bpf filesystem).
PIN_DIR = "/sys/fs/bpf/spyglass"
#: Flow history: embedded ClickHouse (chDB) on this host.
STORE = "chdb:///var/lib/spyglass/flows"
#: The API: loopback only unless told otherwise (and then only with a token).
LISTEN_HOST = "127.0.0.1"
LISTEN_PORT = 4245
#: Hubble's gRPC API: the port a Hubble server listens on, and Spyglass's unix socket.
HUBBLE_PORT = 4244
HUBBLE_SOCKET = "/var/run/spyglass/hubble.sock"
#: Pod addresses and ClusterIPs, as a kind or kubeadm cluster's defaults.
POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
#: Flows kept in memory (2^n - 1, as Hubble's ring; Hubble's default is 4095). The ring
#: holds columns, ~150 bytes a flow (40 MB here), and a live reader must run once per
#: ring's worth of events or be lapped: 262,143 is 0.9 s of a 300k events/s flood, where
#: 65,535 (0.2 s) lapped a 1% client while another client and the collector were busy.
RING_CAPACITY = 262143
#: Names of the lab's network namespaces and host-side veths (`sg-…`, `lxc…`).
LAB_PREFIX = "sg"
LINK_PREFIX = "lxc"
