"""Regenerate the Python modules of `spyglass.api.hubble` from its .proto files.

    .venv/bin/python scripts/gen_protos.py            # into api/hubble (commit the result)
    .venv/bin/python scripts/gen_protos.py --out DIR  # elsewhere (the drift test does this)

The generated modules are committed so that installing Spyglass needs no protoc; this
script is the only way they change, and tests/test_hubble_protos.py fails when they no
longer match what it writes. protoc (from grpcio-tools, pinned in the dev extra) names a
generated module after its .proto file and imports its siblings as top-level modules
(`import flow_pb2 as flow__pb2`); those imports are rewritten into package imports
(`from spyglass.api.hubble import flow_pb2 as flow__pb2`) so the modules work inside the
package. The output depends only on the .proto files and the grpcio-tools version.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent.parent / "api" / "hubble"
PACKAGE = "spyglass.api.hubble"
#: Every .proto file, and those that define a service (only they get a *_pb2_grpc module).
PROTOS = ("flow.proto", "relay.proto", "observer.proto", "peer.proto")
SERVICES = ("observer.proto", "peer.proto")

_SIBLINGS = "|".join(re.escape(Path(p).stem + "_pb2") for p in PROTOS)
#: `import flow_pb2 as flow__pb2` (modules and stubs) and `from flow_pb2 import X`
#: (`import public` re-exports), for the sibling modules only.
_IMPORT = re.compile(rf"^import ({_SIBLINGS}) as (\w+)$", re.MULTILINE)
_FROM = re.compile(rf"^from ({_SIBLINGS}) import ", re.MULTILINE)


def generated_names() -> list[str]:
    """The file names this script writes, in a stable order."""
    names = []
    for proto in PROTOS:
        stem = Path(proto).stem
        names += [f"{stem}_pb2.py", f"{stem}_pb2.pyi"]
        if proto in SERVICES:
            names.append(f"{stem}_pb2_grpc.py")
    return names


def package_imports(source: str) -> str:
    """`source` with the sibling imports protoc writes turned into package imports."""
    source = _IMPORT.sub(rf"from {PACKAGE} import \1 as \2", source)
    return _FROM.sub(rf"from {PACKAGE}.\1 import ", source)


def _protoc(args: list[str]) -> None:
    include = resources.files("grpc_tools") / "_proto"  # the well-known types
    argv = ["grpc_tools.protoc", f"--proto_path={PROTO_DIR}", f"--proto_path={include}", *args]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed: {' '.join(argv)}")


def generate(out_dir: Path) -> list[Path]:
    """Write the generated modules into `out_dir`; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _protoc([f"--python_out={tmp}", f"--pyi_out={tmp}", *PROTOS])
        _protoc([f"--grpc_python_out={tmp}", *SERVICES])
        written = []
        for name in generated_names():
            text = (Path(tmp) / name).read_bytes().decode("utf-8")
            target = out_dir / name
            target.write_bytes(package_imports(text).encode("utf-8"))
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_DIR,
                        help="directory to write into (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
