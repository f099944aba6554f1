"""Atomic writes and hashing: nothing the user had is lost or half-written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes 0600 files; give the result the permissions a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def check_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create `path` if needed and prove we can write there, before any expensive work starts."""
    from vgg_deploy.errors import VggDeployError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        raise VggDeployError(f"cannot write to output folder {path}: {err.strerror or err}") from None
    return path


def link_or_copy(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """A hard link where the file system allows one (no second copy of a 500 MB model), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def copy_run_sharing_files(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                           ignore=None) -> Path:
    """A copy of a run folder whose JSON files are its own (they are rewritten in place) and whose other files
    are hard links to the source's: for a new export or benchmark beside the original at no disk cost."""

    def copy(src: str, dst: str) -> None:
        if src.endswith((".json", ".jsonl")):
            shutil.copy2(src, dst)
        else:
            link_or_copy(src, dst)

    shutil.copytree(source, target, copy_function=copy, ignore=ignore)
    return Path(target)
