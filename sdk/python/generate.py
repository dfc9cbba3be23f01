"""Regenerates the checked-in protobuf/gRPC stubs from ../../proto.

    python sdk/python/generate.py            # rewrite src/ferry_sdk/proto/
    python sdk/python/generate.py --check    # exit 1 if the checked-in stubs drifted

The stubs are checked in (not generated at install) so that `pip install ./sdk/python`
needs only grpcio and protobuf, not grpcio-tools; tests/test_generated.py fails when
they drift from proto/. protoc writes `from ferry.v1 import x_pb2`; the imports are
rewritten to `from ferry_sdk.proto.ferry.v1 import x_pb2` so no top-level `ferry`
package is installed.
"""

from __future__ import annotations

import filecmp
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "src" / "ferry_sdk" / "proto"
# Every file of the package, so a new .proto shows up as drift until its stubs are generated.
FILES = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "ferry" / "v1").glob("*.proto"))


def generate(out: Path) -> None:
    """Runs grpc_tools.protoc into `out` and rewrites the imports."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *FILES]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for f in (out / "ferry" / "v1").iterdir():
        text = f.read_text()
        text = re.sub(r"^from ferry\.v1 import", "from ferry_sdk.proto.ferry.v1 import", text, flags=re.M)
        # grpcio-tools stamps its own version into *_pb2_grpc.py; keep the files stable.
        text = re.sub(r"^GRPC_GENERATED_VERSION = .*$", "GRPC_GENERATED_VERSION = '1.60.0'", text, flags=re.M)
        f.write_text(text)
    for pkg in (out / "ferry", out / "ferry" / "v1"):
        (pkg / "__init__.py").write_text("")


def differences(a: Path, b: Path) -> list[str]:
    """Files that differ between two generated trees."""
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [str(Path(a) / n) for n in cmp.left_only + cmp.right_only + cmp.diff_files]
    for name, sub in cmp.subdirs.items():
        out += differences(Path(a) / name, Path(b) / name)
    # dircmp compares shallowly by stat; confirm byte equality.
    for n in cmp.same_files:
        if (Path(a) / n).read_bytes() != (Path(b) / n).read_bytes():
            out.append(str(Path(a) / n))
    return out


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            drift = differences(OUT / "ferry", Path(tmp) / "ferry")
        if drift:
            print("generated stubs are stale; run `python sdk/python/generate.py`:", *drift, sep="\n  ")
            return 1
        return 0
    generate(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
