#!/usr/bin/env python3
"""Generate the Python bindings for the CRI v1 API from proto/api.proto.

Runs ``grpc_tools.protoc`` (from grpcio-tools) with ``--python_out``,
``--pyi_out`` and ``--grpc_python_out`` and then rewrites the absolute
``import api_pb2`` emitted into ``api_pb2_grpc.py`` into a package-relative
import, so the output works as the ``dockershim_py.api`` package.

Usage::

    python tools/genproto.py              # writes dockershim_py/api/
    python tools/genproto.py --out DIR    # writes into DIR (used by tests)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "proto"
PROTO_FILE = "api.proto"
DEFAULT_OUT = REPO_ROOT / "dockershim_py" / "api"

GENERATED_FILES = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")

_ABS_IMPORT = "import api_pb2 as api__pb2"
_REL_IMPORT = "from . import api_pb2 as api__pb2"


def _fix_grpc_import(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == _ABS_IMPORT]
    if len(hits) != 1:
        raise RuntimeError(
            f"{path}: expected exactly one line {_ABS_IMPORT!r}, found {len(hits)}"
        )
    newline = lines[hits[0]][len(_ABS_IMPORT):]
    lines[hits[0]] = _REL_IMPORT + newline
    path.write_text("".join(lines), encoding="utf-8")


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate the bindings into ``out_dir``; return the generated paths."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - environment problem
        raise SystemExit(
            "grpcio-tools is required: pip install 'grpcio-tools==1.85.1'"
        ) from exc
    from importlib import resources

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Well-known types shipped with grpcio-tools (descriptor.proto etc.).
    wkt_include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{wkt_include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(Path(proto_dir) / PROTO_FILE),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    _fix_grpc_import(out_dir / "api_pb2_grpc.py")
    return [out_dir / name for name in GENERATED_FILES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output directory (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})",
    )
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
