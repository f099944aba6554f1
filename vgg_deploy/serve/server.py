"""`vgg-deploy serve`: a real Triton Inference Server on the CPU for one exported ONNX artifact.

The server is a child process in its own process group (the Python stubs it spawns included), so stopping it,
by Ctrl-C or by the context manager, takes every process with it. Its model repository is assembled in a
hidden folder of the run (same file system: the artifact is hard-linked, not copied) and removed at stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vgg_deploy.console import error_console
from vgg_deploy.errors import RunFolderError, VggDeployError
from vgg_deploy.serve.repository import CPU_RUNTIMES, write_serving_repo
from vgg_deploy.serve.tritonserver import (
    find_tritonserver,
    prepare_backends,
    server_environment,
)

EXIT_TIMEOUT_S = 10  # Triton's own grace period for in-flight requests at shutdown
WORKDIR_PREFIX = ".serve-"
OWNER_FILE = "serve.pid"  # the serve process a work folder belongs to


class ServeError(VggDeployError):
    """The server could not start, or stopped on its own."""


@dataclass
class ServeOptions:
    artifact: str | None = None
    backend: str | None = None  # onnxruntime (default) or openvino
    host: str = "127.0.0.1"
    http_port: int = 8000  # 0: any free port
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8
    max_queue_delay_us: int = 100
    dynamic_batching: bool = True
    threads: int | None = None
    tritonserver: str | None = None
    startup_timeout_s: float = 120.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _failure_reason(log: str) -> str:
    """The line of Triton's log that says why it stopped (a model that failed to load, else its last error),
    without the log's timestamp prefix."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    picked = next((line for line in lines if "failed to load" in line and "version" in line), None)
    if picked is None:
        errors = [line for line in lines if line.startswith(("error:", "E"))]
        picked = (errors or lines or ["no output"])[-1]
    return picked.split("] ", 1)[-1].strip().strip('"').split("\\n")[0].strip()


class TritonServer:
    def __init__(self, run_dir: str | Path, options: ServeOptions | None = None):
        self.run_dir = Path(run_dir)
        self.options = options or ServeOptions()
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self.model_name = ""
        self.artifact = ""
        self.runtime = ""
        self.install = None
        self.ports: dict[str, int] = {}
        self.log_path: Path | None = None

    # -- addresses ------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.options.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.options.host}:{self.ports['metrics']}/metrics"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> TritonServer:
        from vgg_deploy.artifacts import export_dir as export_dir_of
        from vgg_deploy.artifacts.choice import choose_artifact
        from vgg_deploy.artifacts.manifest import MANIFEST, read_manifest

        o = self.options
        if o.backend is not None and o.backend not in CPU_RUNTIMES:
            raise VggDeployError(f"--backend must be one of {', '.join(CPU_RUNTIMES)} for serve (got {o.backend})")
        if o.max_batch < 1:
            raise VggDeployError(f"--max-batch must be at least 1 (got {o.max_batch})")
        export_dir = export_dir_of(self.run_dir)
        if not (export_dir / MANIFEST).is_file():
            raise RunFolderError(f"{self.run_dir} has no exported artifacts; run `vgg-deploy export {self.run_dir}` first")
        manifest = read_manifest(export_dir)
        onnx_files = [e["name"] for e in manifest["artifacts"] if e["format"] == "onnx"]
        if o.artifact is not None and o.artifact not in onnx_files:
            raise VggDeployError(f"serve runs the run's ONNX files on the CPU ({', '.join(onnx_files) or 'none exported'}), "
                                 f"not {o.artifact}; an engine is served by Triton's container from `export --triton-repo`")
        choice = choose_artifact(self.run_dir, manifest, artifact=o.artifact, backend=o.backend, threads=o.threads,
                                 runtimes=CPU_RUNTIMES)
        entry = next(e for e in manifest["artifacts"] if e["name"] == choice.spec.name)
        self.artifact, self.runtime = choice.spec.name, choice.spec.kind
        error_console.print(f"artifact: {self.artifact} on {self.runtime} ({choice.why})")

        self.install = find_tritonserver(o.tritonserver)
        self.ports = {kind: port or free_port(o.host) for kind, port in
                      (("http", o.http_port), ("grpc", o.grpc_port), ("metrics", o.metrics_port))}
        remove_stale_workdirs(self.run_dir)
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=self.run_dir))
        (self.workdir / OWNER_FILE).write_text(str(os.getpid()))
        try:
            self.model_name = write_serving_repo(
                self.workdir / "models", artifact=Path(choice.spec.path), entry=entry, manifest=manifest,
                runtime=self.runtime, max_batch=o.max_batch,
                queue_delay_us=o.max_queue_delay_us if o.dynamic_batching else None, threads=o.threads)
            backends = prepare_backends(self.install, self.workdir / "backends")
            self._launch(backends)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, backends: Path | None) -> None:
        o = self.options
        command = [
            str(self.install.binary), f"--model-repository={self.workdir / 'models'}",
            f"--http-address={o.host}", f"--http-port={self.ports['http']}",
            f"--grpc-address={o.host}", f"--grpc-port={self.ports['grpc']}",
            f"--metrics-address={o.host}", f"--metrics-port={self.ports['metrics']}",
            "--allow-gpu-metrics=false", "--strict-readiness=true", f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        ]
        if backends is not None:
            command.append(f"--backend-directory={backends}")
        log_dir = self.run_dir / "serve"
        log_dir.mkdir(exist_ok=True)
        self.log_path = log_dir / f"tritonserver-{self.ports['http']}.log"
        with open(self.log_path, "wb") as log:
            # Its own session: a terminal's Ctrl-C reaches serve, which then stops the whole group in order.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=server_environment(self.install), start_new_session=True,
                                            preexec_fn=_stop_with_parent_hook())  # noqa: PLW1509 (one libc call)

    def _wait_ready(self) -> None:
        url = f"http://{self.http_url}/v2/models/{self.model_name}/ready"
        deadline = time.monotonic() + self.options.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeError(f"tritonserver ({self.install.source}) stopped during start-up: "
                                 f"{_failure_reason(self.log_path.read_text(errors='replace'))} (log: {self.log_path})")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise ServeError(f"tritonserver did not report {self.model_name} ready within "
                         f"{self.options.startup_timeout_s:.0f} s (log: {self.log_path})")

    def wait(self) -> int:
        """Block until the server exits by itself (Ctrl-C raises KeyboardInterrupt here); its exit code."""
        return self.process.wait()

    def stop(self) -> None:
        """Stop the server and every process it started, then remove the assembled repository."""
        if self.process is not None:
            group = self.process.pid
            if self.process.poll() is None:
                _signal_group(group, signal.SIGINT)  # Triton finishes in-flight requests, then unloads
                try:
                    self.process.wait(timeout=EXIT_TIMEOUT_S + 5)
                except subprocess.TimeoutExpired:
                    _signal_group(group, signal.SIGKILL)
                    self.process.wait()
            # A model's stub can outlive Triton's own exit by a moment, or linger: nothing of the server may.
            if not _wait_until_empty(group, seconds=5):
                _signal_group(group, signal.SIGKILL)
                _wait_until_empty(group, seconds=5)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop_with_parent_hook():
    """A pre-exec hook for the server: if serve itself dies without stopping it (SIGKILL, a crash), the kernel
    sends the server SIGTERM, which Triton treats as an orderly shutdown; its stubs exit with it. The libc
    function is looked up here, in the parent, so the forked child only makes the one call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)


def remove_stale_workdirs(run_dir: Path) -> list[Path]:
    """Work folders left by a serve that was killed before it could stop (its process is gone); a running
    serve's folder is left alone."""
    removed = []
    for folder in run_dir.glob(f"{WORKDIR_PREFIX}*"):
        try:
            os.kill(int((folder / OWNER_FILE).read_text()), 0)
            continue  # its serve is alive
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # no readable owner (being created right now): not ours to judge
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass  # the group has no process left: the state we want


def _wait_until_empty(group: int, *, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_members(group):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def group_members(group: int) -> list[int]:
    """PIDs still in process group `group` (from /proc): what a stopped server must leave empty."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(entry.name))
    return members

