"""The check that every image decodes before training starts: in parallel, with each verdict cached.

A bad file found mid-epoch costs the whole run, so the default decodes every file once. What makes that
affordable on large folders: a process pool over all the cores this process may use (decoding holds the
GIL in parts, so threads would not scale), and a verdict cache keyed by (path, size, mtime), so an
unchanged file costs a stat call on the next run instead of a decode.

Modes (`--image-check`):
- cached (default): decode every file whose path, size and mtime have no verdict yet; reuse the rest.
- full: decode every file again, ignoring (and refreshing) the cache.
- header: open each file's header only (format, size, decompression-bomb limit): catches files that are
  not images, empty or huge, but not truncated or corrupt pixel data. No cache.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import PIL

from vgg_deploy.errors import DataError
from vgg_deploy.imaging import MAX_IMAGE_PIXELS, BadImage, check_image

CHECK_MODES = ("cached", "full", "header")
# A verdict holds only under the rules that gave it: bump RULES_VERSION when check_image changes.
RULES_VERSION = 1
RULES = f"v{RULES_VERSION} pillow {PIL.__version__} max_pixels {MAX_IMAGE_PIXELS}"
CACHE_ENV = "VGG_DEPLOY_CACHE_DIR"
# Below this many files a process pool costs more to start than it saves.
PARALLEL_MIN_FILES = 256
CHUNK_FILES = 64
COMMIT_EVERY_S = 5.0

Progress = Callable[[int], None]  # called with how many more files were checked


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_cache_path() -> Path:
    """$VGG_DEPLOY_CACHE_DIR, else $XDG_CACHE_HOME/vgg-deploy, else ~/.cache/vgg-deploy."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vgg-deploy"
    return Path(root) / "image_checks.sqlite"


def _check_chunk(paths: list[str]) -> list[str | None]:
    """Worker side: one reason (or None) per path. Plain strings cross the process boundary cheaply."""
    return [bad.reason if (bad := check_image(p)) is not None else None for p in paths]


def _pool_context():
    # fork, as torch's DataLoader workers do on Linux: nothing to re-import, and no __main__ to re-run (which
    # spawn and forkserver need, and a notebook or stdin does not have). The workers only run Pillow.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and sys.platform == "linux" else "spawn")


def decode_all(paths: Sequence[str], *, workers: int, progress: Progress | None = None,
               on_chunk: Callable[[list[str], list[str | None]], None] | None = None) -> list[str | None]:
    """check_image on every path, in order; serial below PARALLEL_MIN_FILES files or with one worker."""
    chunks = [list(paths[i : i + CHUNK_FILES]) for i in range(0, len(paths), CHUNK_FILES)]
    reasons: list[str | None] = []

    def take(chunk: list[str], verdicts: list[str | None]) -> None:
        reasons.extend(verdicts)
        if on_chunk is not None:
            on_chunk(chunk, verdicts)
        if progress is not None:
            progress(len(chunk))

    if workers <= 1 or len(paths) < PARALLEL_MIN_FILES:
        for chunk in chunks:
            take(chunk, _check_chunk(chunk))
        return reasons
    done = 0
    # Forked workers share the parent's heap until they write to it; their garbage collector would write to
    # every inherited object (a million paths on ImageNet) and copy it. Frozen objects are never visited.
    gc.freeze()
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=_pool_context()) as pool:
            for chunk, verdicts in zip(chunks, pool.map(_check_chunk, chunks)):
                take(chunk, verdicts)
                done += 1
    except BrokenProcessPool:
        # A worker died (killed for memory, or a decoder crashed): finish here, one file at a time, so the
        # file responsible is the one this process stops on rather than an anonymous pool error.
        for chunk in chunks[done:]:
            take(chunk, _check_chunk(chunk))
    finally:
        gc.unfreeze()
    return reasons


class VerdictCache:
    """(path, size, mtime_ns, rules) -> reason or None, in one SQLite file shared by every run."""

    def __init__(self, path: Path, *, report: Callable[[str], None] | None = None):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open(str(path))
        except (OSError, sqlite3.Error) as err:
            # A cache is a saving, never a reason to stop: check everything, and say why it is slow.
            if report is not None:
                report(f"warning: image-check cache {path} unusable ({err}); checking every image, nothing "
                       f"cached (set {CACHE_ENV} to a writable folder)")
            self._db = self._open(":memory:")
        self._pending: list[tuple] = []
        self._last_commit = time.monotonic()

    @staticmethod
    def _open(target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=60)
        db.execute("CREATE TABLE IF NOT EXISTS verdicts (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                   "rules TEXT, reason TEXT)")
        db.commit()
        return db

    def fresh(self, stats: dict[str, tuple[int, int]]) -> dict[str, str | None]:
        """The cached verdicts still valid for files with these (size, mtime_ns)."""
        if not stats:
            return {}
        prefix = os.path.commonpath(list(stats))
        # One range scan over the primary key: every path under the common folder, nothing else.
        rows = self._db.execute("SELECT path, size, mtime_ns, reason FROM verdicts WHERE path >= ? AND path < ? "
                                "AND rules = ?", (prefix, prefix + "\U0010ffff", RULES))
        return {path: reason for path, size, mtime_ns, reason in rows if stats.get(path) == (size, mtime_ns)}

    def add(self, rows: Iterable[tuple[str, int, int, str | None]]) -> None:
        self._pending += [(path, size, mtime_ns, RULES, reason) for path, size, mtime_ns, reason in rows]
        if time.monotonic() - self._last_commit > COMMIT_EVERY_S:
            self.commit()

    def commit(self) -> None:
        """Kept verdicts survive an interrupted check: the next run resumes where this one stopped."""
        if self._pending:
            self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)", self._pending)
            self._db.commit()
            self._pending = []
        self._last_commit = time.monotonic()

    def close(self) -> None:
        self.commit()
        self._db.close()


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def check_images(paths: Sequence[Path], *, mode: str = "cached", workers: int | None = None,
                 cache_path: Path | None = None, progress: Progress | None = None,
                 report: Callable[[str], None] | None = None) -> list[BadImage]:
    """Every bad file among `paths`, in their order, each with its reason."""
    if mode not in CHECK_MODES:
        raise DataError(f"--image-check must be one of {', '.join(CHECK_MODES)} (got {mode!r})")
    names = [os.path.abspath(p) for p in paths]  # abspath, not resolve: no system call per path
    shown = {name: str(p) for name, p in zip(names, paths)}
    if mode == "header":
        return [bad for p in paths if (bad := check_image(p, decode=False)) is not None]
    workers = workers or usable_cores()
    cache = VerdictCache(cache_path or default_cache_path(), report=report)
    try:
        stats = {name: st for name in names if (st := _stat(name)) is not None}
        known = cache.fresh(stats) if mode == "cached" else {}
        todo = [name for name in names if name not in known]
        if report is not None:
            report(f"checking {len(todo)} of {len(names)} images on {min(workers, max(1, len(todo)))} process(es)"
                   f" ({len(known)} unchanged since their cached check)")
        if progress is not None and known:
            progress(len(known))

        def remember(chunk: list[str], verdicts: list[str | None]) -> None:
            cache.add((name, *stats[name], reason) for name, reason in zip(chunk, verdicts) if name in stats)

        known.update(zip(todo, decode_all(todo, workers=workers, progress=progress, on_chunk=remember)))
    finally:
        cache.close()
    return [BadImage(shown[name], known[name]) for name in names if known[name] is not None]
