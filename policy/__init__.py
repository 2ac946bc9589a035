"""Network policy: Kubernetes and Cilium policies compiled to identity-keyed tables.

The same compiled tables are loaded into the datapath's maps and answer
`spyglass explain`, so the two can never disagree.
"""
