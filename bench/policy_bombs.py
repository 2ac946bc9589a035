"""Policy compilation under hostile and large inputs, against the previous compiler's loop.

    .venv/bin/python bench/policy_bombs.py          # --repeat 5

Each case is parsed once and compiled `repeat` times against the demo's seven pods (or,
for `legit-100x50`, 100 identities and 50 policies). The baseline is the loop the
compiler had before issue 9, kept here: every rule, identical or not, and a `PolicyKey`
dataclass built for every generated key before the duplicate check. Printed: distinct
entries, generated keys, median ms for both, ms per 1,000 entries (the issue's budget
is 50 ms), and the speed-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from spyglass.model.identity import IdentityAllocator, pod_labels
from spyglass.model.policy import Direction
from spyglass.policy import compile as comp
from spyglass.policy.model import Policy, Rule
from spyglass.policy.parse import parse_policy_yaml

NP = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
CNP = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
DEMO = [("shop", "frontend"), ("shop", "frontend"), ("shop", "cart"), ("shop", "catalog"),
        ("shop", "db"), ("ops", "loadgen"), ("ops", "monitor")]


def aliases(doc: str, copies: int = 9) -> str:
    return doc + "  - *r\n" * copies


def cases() -> dict[str, tuple[str, Mapping[int, Sequence[str]]]]:
    demo = identities([(ns, {"app": app, "n": str(i)}) for i, (ns, app) in enumerate(DEMO)])
    cidrs = "\n".join(f"    - {{ipBlock: {{cidr: 10.{i}.0.0/16}}}}" for i in range(1, 11))
    ports = "\n".join(f"    - {{port: {8000 + i}}}" for i in range(10))
    ranges = "\n".join(f"      - {{port: '{1 + i}', endPort: {65535 - i}, protocol: ANY}}"
                       for i in range(10))
    sels = "\n".join(f"    - {{matchExpressions: [{{key: app, operator: NotIn, "
                     f"values: [x{i}]}}]}}" for i in range(10))
    big = identities([(ns, {"app": f"a{i % 10}", "tier": f"t{i % 3}", "n": str(i)})
                      for ns in ("prod", "dev") for i in range(50)])
    docs = [NP + f"""metadata: {{name: p{i}, namespace: {"prod" if i % 2 else "dev"}}}
spec:
  podSelector: {{matchLabels: {{app: a{i % 10}}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{tier: t{i % 3}}}}}}}]
    ports: [{{port: {8000 + i}, endPort: {8100 + i}}}]
  egress: [{{to: [{{ipBlock: {{cidr: 10.{i}.0.0/16}}}}]}}]
""" for i in range(50)]
    return {
        "issue-bomb-10x10x10": (aliases(NP + f"""metadata: {{name: bomb, namespace: shop}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress]
  ingress:
  - &r
    from:
{cidrs}
    ports:
{ports}
"""), demo),
        "cnp-port-ranges": (aliases(CNP + f"""metadata: {{name: bomb, namespace: shop}}
spec:
  endpointSelector: {{}}
  ingress:
  - &r
    fromCIDR: [{", ".join(f"10.{i}.0.0/16" for i in range(1, 11))}]
    toPorts:
    - ports:
{ranges}
"""), demo),
        "selector-bomb": (aliases(CNP + f"""metadata: {{name: bomb, namespace: shop}}
spec:
  endpointSelector: {{}}
  ingress:
  - &r
    fromEndpoints:
{sels}
    toPorts:
    - ports:
{ranges}
"""), demo),
        "legit-100x50": ("---\n".join(docs), big),
    }


def identities(pods: list[tuple[str, dict[str, str]]]) -> dict[int, tuple[str, ...]]:
    alloc, out = IdentityAllocator(), {}
    for ns, labels in pods:
        lbls = pod_labels(ns, labels)
        out[alloc.allocate(lbls)] = lbls
    return out


@dataclass(frozen=True, slots=True, order=True)
class OldKey:
    """PolicyKey as it was before issue 9: a frozen dataclass."""

    local_identity: int
    direction: Direction
    remote_identity: int
    proto: int = 0
    port: int = 0
    port_bits: int = 0


def rules(policies: Sequence[Policy], ids: Mapping[int, Sequence[str]]
          ) -> Iterator[tuple[comp._Compiler, Rule, list[int], Direction]]:
    """Every rule of every spec and direction, identical or not, with its local identities."""
    ordered = sorted(policies, key=lambda p: p.ref)
    c = comp._Compiler(ids, comp._cidr_identities(ordered, None), {})
    for pol in ordered:
        for spec in pol.specs:
            locals_ = [i for i in c.pods if spec.subject.matches(c.labels[i])]
            for direction, group in ((Direction.INGRESS, (*spec.ingress, *spec.ingress_deny)),
                                     (Direction.EGRESS, (*spec.egress, *spec.egress_deny))):
                for rule in group:
                    yield c, rule, locals_, direction


def previous_loop(policies: Sequence[Policy], ids: Mapping[int, Sequence[str]]) -> int:
    """The compiler's key loop before issue 9 (cookies aside): no rule dedupe, a dataclass
    per generated key, `setdefault` for the first-wins rule."""
    allow: dict[OldKey, int] = {}
    deny: dict[OldKey, int] = {}
    for c, rule, locals_, direction in rules(policies, ids):
        table = deny if rule.deny else allow
        for local in locals_:
            for key in c.keys(rule, local, direction):
                table.setdefault(OldKey(*key), rule.index)
    return len(allow) + len(deny)


def generated(policies: Sequence[Policy], ids: Mapping[int, Sequence[str]]) -> int:
    return sum(1 for c, rule, locals_, direction in rules(policies, ids)
               for local in locals_ for _ in c.keys(rule, local, direction))


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'case':<22}{'bytes':>7}{'entries':>9}{'generated':>11}{'now ms':>9}"
          f"{'before ms':>11}{'ms/1k entries':>15}{'speed-up':>10}")
    for name, (text, ids) in cases().items():
        policies = parse_policy_yaml(text, name)
        compiled = comp.compile_policies(policies, ids)
        entries = len(compiled.allow) + len(compiled.deny)
        assert previous_loop(policies, ids) == entries
        now = median_ms(lambda p=policies, i=ids: comp.compile_policies(  # type: ignore[misc]
            p, i, max_entries=comp.DEFAULT_MAX_ENTRIES), args.repeat)
        before = median_ms(lambda p=policies, i=ids: previous_loop(p, i),  # type: ignore[misc]
                           args.repeat)
        print(f"{name:<22}{len(text):>7}{entries:>9,}{generated(policies, ids):>11,}"
              f"{now:>9.1f}{before:>11.1f}{now / entries * 1000:>15.2f}"
              f"{before / now:>9.1f}x")


if __name__ == "__main__":
    main()
