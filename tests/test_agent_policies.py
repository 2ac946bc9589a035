"""The agent's policy set across a restart: journaled changes come back, loaded once."""

from __future__ import annotations

from typing import Any

import pytest

from spyglass.agent.policies import PodView, PolicyManager, PolicyNotFound
from spyglass.lab.manifest import parse_manifest
from spyglass.model.policy import CompiledPolicy

NS = "k8s:io.kubernetes.pod.namespace="
PODS = [PodView("shop", "web-0", "10.244.0.2", 300, (NS + "shop", "k8s:app=web")),
        PodView("shop", "db-0", "10.244.0.3", 301, (NS + "shop", "k8s:app=db"))]
MANIFEST = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-closed, namespace: shop}
spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress]}
"""
#: The user's change at runtime: db may be reached from web on 5432 only.
NARROWER = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
"""


class Journal:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def applied(self, text: str, source: str) -> None:
        self.entries.append({"op": "apply", "text": text, "source": source})

    def deleted(self, name: str, namespace: str, kind: str | None) -> None:
        self.entries.append({"op": "delete", "name": name, "namespace": namespace,
                             "kind": kind})


def manager(journal: Journal | None = None) -> tuple[PolicyManager, list[CompiledPolicy]]:
    loads: list[CompiledPolicy] = []
    return PolicyManager(lambda: PODS, loads.append, journal=journal), loads


def objects() -> list[Any]:
    m = parse_manifest(MANIFEST, "lab.yaml")
    return list(m.objects_of("NetworkPolicy"))


def names(pm: PolicyManager) -> list[str]:
    return [f"{p['namespace']}/{p['name']}" for p in pm.list()]


def test_runtime_changes_are_journaled_in_order() -> None:
    journal = Journal()
    pm, _ = manager(journal)
    pm.restore(objects(), "lab.yaml", [])
    pm.apply_yaml(NARROWER, "narrower.yaml")
    pm.delete("web-closed", "shop")
    assert [e["op"] for e in journal.entries] == ["apply", "delete"]
    assert journal.entries[1]["name"] == "web-closed"


def test_a_restart_rebuilds_the_same_set_and_loads_it_once() -> None:
    journal = Journal()
    before, _ = manager(journal)
    before.restore(objects(), "lab.yaml", [])
    before.apply_yaml(NARROWER, "narrower.yaml")
    before.delete("web-closed", "shop")

    after, loads = manager()
    after.restore(objects(), "lab.yaml", journal.entries)
    # One load, of the final set: the manifest's wider db-from-web and its web-closed are
    # never put back in the kernel, not even for a moment.
    assert len(loads) == 1
    assert names(after) == names(before) == ["shop/db-from-web"]
    assert loads[0].allow == before.compiled.allow
    assert loads[0].deny == before.compiled.deny
    assert after.list()[0]["source"] == "narrower.yaml"


def test_a_journal_entry_that_no_longer_applies_is_skipped_not_fatal(
        caplog: pytest.LogCaptureFixture) -> None:
    pm, loads = manager()
    pm.restore(objects(), "lab.yaml", [
        {"op": "apply", "text": "kind: NetworkPolicy\nmetadata: {name: [bad]}\n",
         "source": "old.yaml"},
        {"op": "delete", "name": "never-was", "namespace": "shop", "kind": None},
        {"op": "delete", "name": "web-closed", "namespace": "shop", "kind": None},
        {"op": "rename"},  # a future op this version does not know
    ])
    assert names(pm) == ["shop/db-from-web"]  # the good entry still took
    assert len(loads) == 1
    skipped = [r for r in caplog.records if "no longer applies" in r.getMessage()]
    assert len(skipped) == 2


def test_delete_names_one_policy_or_says_which() -> None:
    pm, _ = manager()
    pm.restore(objects(), "lab.yaml", [])
    with pytest.raises(PolicyNotFound, match=r"no policy shop/nope is applied \(applied: "
                                             r"NetworkPolicy shop/db-from-web"):
        pm.delete("nope", "shop")
    assert names(pm) == ["shop/db-from-web", "shop/web-closed"]  # nothing changed
