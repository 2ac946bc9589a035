"""spyglass.lab: pods as network namespaces on this host, from a Kubernetes-style manifest.

Kept import-free on purpose: demo pods run `python -m spyglass.lab.demoapp`,
which should not pay for pyroute2 or the collector. Import what you need:

- `spyglass.lab.manifest`: `load_manifest`, `parse_manifest`, `Manifest`;
- `spyglass.lab.lab`: `Lab` (up/down/pods/pod/exec + enrichment getters);
- `spyglass.lab.state`: `load_state`, `pods_from_state`, `find_pod`,
  `exec_in_pod`, `teardown_from_state` for other shells (`lab ls`, `lab exec`,
  `down`).
"""
