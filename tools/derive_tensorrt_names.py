"""Regenerate tests/export/data/tensorrt_names.txt: every identifier the TensorRT Python binding registers.

The binding wheel (tensorrt-cu13-bindings) downloads from PyPI; the libraries it needs come only from NVIDIA's
index, so `import tensorrt` fails here. The names pybind11 registers (classes, methods, properties, enum
members) are C strings in its tensorrt.so, so they can be read without importing it.

    python tools/derive_tensorrt_names.py [--version 11.4.0.106]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "export" / "data" / "tensorrt_names.txt"
IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{1,63}")


def binding_names(shared_object: bytes) -> list[str]:
    """The identifiers among the binary's NUL-terminated strings (C++ mangled symbols left out): pybind11
    registers each Python name as a string literal. The linker stores a string that ends another inside its
    tail ("Logger" as the end of "ILogger", "INT8" of "UINT8"), so a name is registered when one of these
    strings ends with it (tests/export/test_tensorrt_names.py)."""
    names = set()
    for chunk in shared_object.split(b"\0"):
        if IDENTIFIER.fullmatch(chunk) and not chunk.startswith((b"_Z", b"ZN", b"ZT")):
            names.add(chunk.decode())
    return sorted(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="11.4.0.106")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
                        f"tensorrt-cu13-bindings=={args.version}"], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            so = archive.read("tensorrt_bindings/tensorrt.so")
    names = binding_names(so)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# identifiers registered by tensorrt-cu13-bindings=={args.version} (tools/derive_tensorrt_names.py)\n"
    args.out.write_text(header + "\n".join(names) + "\n")
    print(f"{len(names)} names -> {args.out}")


if __name__ == "__main__":
    main()
