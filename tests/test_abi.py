"""The Python mirror of the event struct must match the C header byte for byte.

The offsets come from compiling bpf/spyglass_event.h with the system C compiler, so a
field added on one side only fails here rather than as garbage flows at run time.
"""

from __future__ import annotations

import ctypes as ct
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from spyglass.collector import abi

HEADER = Path(__file__).resolve().parents[1] / "bpf" / "spyglass_event.h"


def _c_fields() -> list[str]:
    """Field names of struct sg_event, parsed from the header."""
    body = re.search(r"struct sg_event \{(.*?)\}", HEADER.read_text(), re.S)
    assert body, "struct sg_event not found in the header"
    text = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    return re.findall(r"\b(\w+)\s*(?:\[\d+\])?\s*;", text)


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, int]]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler: apt-get install gcc (run `make setup`)")
    fields = _c_fields()
    src = tmp_path_factory.mktemp("abi") / "layout.c"
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        f'#include "{HEADER}"',
        "int main(void) {",
        '  printf("__size__ %zu 0\\n", sizeof(struct sg_event));',
    ]
    for f in fields:
        lines.append(
            f'  printf("{f} %zu %zu\\n", offsetof(struct sg_event, {f}),'
            f" sizeof(((struct sg_event *)0)->{f}));"
        )
    lines.append("  return 0; }")
    src.write_text("\n".join(lines))
    exe = src.with_suffix("")
    subprocess.run([cc, "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    rows = (ln.split() for ln in out.splitlines())
    return {name: (int(off), int(size)) for name, off, size in rows}


def test_struct_size_matches(c_layout: dict[str, tuple[int, int]]) -> None:
    assert c_layout["__size__"][0] == ct.sizeof(abi.SgEvent) == abi.EVENT_SIZE == 116


def test_every_field_matches(c_layout: dict[str, tuple[int, int]]) -> None:
    py = {name: (getattr(abi.SgEvent, name).offset, getattr(abi.SgEvent, name).size)
          for name, _ in abi.SgEvent._fields_}
    c = {k: v for k, v in c_layout.items() if k != "__size__"}
    assert py == c


def test_record_is_one_perf_sample_of_128_bytes() -> None:
    # perf pads header(8) + size(4) + raw to 8 bytes; 116 is chosen so the record is 128.
    assert (8 + 4 + abi.EVENT_SIZE + 7) // 8 * 8 == abi.RECORD_SIZE == 128
    assert abi.RECORD_DTYPE.fields["ev"][1] == 12


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("SG_EVENT_DROP", abi.EVENT_DROP, id="drop"),
        pytest.param("SG_EVENT_TRACE", abi.EVENT_TRACE, id="trace"),
        pytest.param("SG_EVENT_POLICY_VERDICT", abi.EVENT_POLICY_VERDICT, id="policy-verdict"),
        pytest.param("SG_EVENT_VERSION", abi.EVENT_VERSION, id="version"),
        pytest.param("SG_F_IPV6", abi.F_IPV6, id="flag-ipv6"),
        pytest.param("SG_F_IS_REPLY", abi.F_IS_REPLY, id="flag-reply"),
        pytest.param("SG_F_REPLY_KNOWN", abi.F_REPLY_KNOWN, id="flag-reply-known"),
        pytest.param("SG_F_XLATED", abi.F_XLATED, id="flag-xlated"),
        pytest.param("SG_F_AUDITED", abi.F_AUDITED, id="flag-audited"),
        pytest.param("SG_F_XLATED_REPLY", abi.F_XLATED_REPLY, id="flag-xlated-reply"),
    ],
)
def test_constants_match_header(name: str, value: int) -> None:
    m = re.search(rf"#define {name}\s+(0x[0-9a-fA-F]+|\d+)", HEADER.read_text())
    assert m, f"{name} not defined in {HEADER.name}"
    assert int(m.group(1), 0) == value


def test_pack_event_round_trips_through_numpy() -> None:
    import numpy as np

    raw = abi.pack_event(type=abi.EVENT_TRACE, sport=35010, dport=8080, proto=6,
                         saddr=bytes([10, 244, 0, 2]), src_identity=1234)
    arr = np.frombuffer(raw, dtype=abi.EVENT_DTYPE)
    assert arr["sport"][0] == 35010 and arr["dport"][0] == 8080
    assert bytes(arr["saddr"][0][:4]) == bytes([10, 244, 0, 2])
    assert arr["src_identity"][0] == 1234 and arr["len"][0] == 116
