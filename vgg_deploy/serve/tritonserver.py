"""Finding a real `tritonserver` and giving it a Python backend that runs in this environment.

Two sources, in this order: an explicit path (`--tritonserver`), then `tritonserver` on PATH (the user's own
Triton install, with its own backends), then the binary inside the `nvidia-pytriton` wheel. The wheel's
binary is a full Triton server (HTTP, gRPC, metrics, dynamic batching) with the Python backend, which is
all a CPU model needs. PyTriton's own Python API is not used: its bundled stub setup fails to load models on
this Python (PyTriton issue #51) and it pins numpy < 2, so the wheel is installed with `--no-deps` and only
its binaries are run.

For the wheel's binary, a backend directory is assembled per server: the Python backend library, its utils
module and the stub built for the running Python's minor version. The stub links libpython dynamically, so
the running interpreter's own libpython goes first on LD_LIBRARY_PATH (the same ABI and the same standard
library as the environment the model imports from).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from vgg_deploy.errors import UnavailableError

INSTALL_HINT = ("pip install 'tritonclient[http,grpc]' && pip install --no-deps nvidia-pytriton "
                "(the wheel carries a CPU tritonserver), or put Triton's own tritonserver on PATH")


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    source: str  # "given", "PATH" or "nvidia-pytriton wheel"
    python_backend: Path | None = None  # the wheel's backends/python, assembled per server
    stub: Path | None = None
    library_dirs: tuple[Path, ...] = field(default_factory=tuple)


def _wheel_root() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_tritonserver(explicit: str | Path | None = None) -> TritonInstall:
    if explicit is not None:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UnavailableError(f"--tritonserver {path} is not an executable file")
        return TritonInstall(path, "given")
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstall(Path(on_path), "PATH")
    root = _wheel_root()
    if root is None:
        raise UnavailableError(f"serve needs a Triton Inference Server: {INSTALL_HINT}")
    server_dir = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    binary = server_dir / "bin" / "tritonserver"
    if not binary.is_file():
        raise UnavailableError(f"the nvidia-pytriton wheel at {root} has no tritonserver binary; {INSTALL_HINT}")
    if not stub.is_file():
        raise UnavailableError(f"the nvidia-pytriton wheel at {root} has no Python-backend stub for Python {version}")
    libs = root.parent / "nvidia_pytriton.libs"
    return TritonInstall(binary, "nvidia-pytriton wheel", python_backend=server_dir / "backends" / "python", stub=stub,
                         library_dirs=(Path(sysconfig.get_config_var("LIBDIR")), libs))


def prepare_backends(install: TritonInstall, into: Path) -> Path | None:
    """The --backend-directory for `install`: None for a Triton install of the user's own (its backends are
    where it expects them); for the wheel, a python/ backend folder with the stub for this Python."""
    if install.python_backend is None:
        return None
    python_dir = into / "python"
    python_dir.mkdir(parents=True)
    for item in install.python_backend.iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shutil.copy2(install.stub, python_dir / "triton_python_backend_stub")
    return into


def server_environment(install: TritonInstall) -> dict[str, str]:
    env = dict(os.environ)
    if install.library_dirs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*map(str, install.library_dirs),
                                                  *filter(None, [env.get("LD_LIBRARY_PATH")])])
    env["VGG_DEPLOY_SYS_PATH"] = os.pathsep.join(p for p in sys.path if p)
    return env
