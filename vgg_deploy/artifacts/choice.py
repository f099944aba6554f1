"""Which artifact, on which runtime: the user's pick, checked, or the fastest one that passed at export."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vgg_deploy.artifacts import REPORT_JSON, benchmark_dir, export_dir
from vgg_deploy.artifacts.manifest import still_valid
from vgg_deploy.errors import RunFolderError, VggDeployError
from vgg_deploy.fileio import read_json
from vgg_deploy.runners.spec import RunnerSpec

PYTORCH = "pytorch"  # the run's own checkpoint, run by PyTorch: always there, the reference
BACKENDS_FOR_FORMAT = {"onnx": ("onnxruntime", "openvino"), "tensorrt": ("tensorrt",), PYTORCH: ("torch",)}
# Without a benchmark report, the order in which artifacts are expected to be fastest per runtime. On CPUs
# onnxruntime has few FP16 kernels (it casts around them), so FP16 comes after FP32 there.
EXPECTED_ORDER = {
    "onnxruntime": ("onnx-int8", "onnx", "onnx-fp16"),
    "openvino": ("onnx-int8", "onnx", "onnx-fp16"),
    "tensorrt": ("trt-int8", "trt-fp16"),
    "torch": (PYTORCH,),
}
# An INT8 file exported without --max-accuracy-drop is trusted as the default when it disagrees with FP32
# on at most this many points of the export's decision images (export warns above it too).
DEFAULT_INT8_DISAGREEMENT = 1.0
# The CPU runtimes a default choice considers, where installed. Export checks every ONNX file on onnxruntime;
# another runtime is taken only where the benchmark ran the same file on it and its agreement with PyTorch
# there came within this many points of onnxruntime's (it computes the file the export checked).
CPU_RUNTIMES = ("onnxruntime", "openvino", "torch")
RUNTIME_AGREEMENT_SLACK = 1.0


@dataclass(frozen=True)
class ArtifactChoice:
    spec: RunnerSpec
    why: str


def _format_of(name: str, entries: dict[str, dict]) -> str:
    return PYTORCH if name == PYTORCH else entries[name]["format"]


def passed_at_export(entry: dict) -> tuple[bool, str]:
    """(passed, why) from what export recorded. FP32/FP16 files exist only if their parity passed; ONNX INT8
    is judged on the decision images (never on test); an INT8 engine passed only if a budget gated it."""
    if entry["format"] == "tensorrt":
        parity = entry.get("parity")
        if parity is None:
            return False, "no accuracy check at export"
        if entry["precision"] == "int8" and parity.get("max_accuracy_drop") is None:
            return False, f"test drop {parity['drop_points']:.2f} points recorded, but no --max-accuracy-drop gated it"
        return True, "checked against PyTorch at export"
    if entry["precision"] != "int8":
        return ("parity" in entry), "parity with PyTorch checked at export"
    decision = entry.get("decision") or {}
    if "disagreement_points" not in decision:
        return False, "no INT8 decision figures in the manifest"
    allowed = (entry.get("accuracy") or {}).get("max_accuracy_drop")
    allowed = DEFAULT_INT8_DISAGREEMENT if allowed is None else allowed
    ok = decision["disagreement_points"] <= allowed
    return ok, (f"disagrees with FP32 on {decision['disagreement_points']:.2f} points of the decision images "
                f"({'within' if ok else 'beyond'} {allowed})")


def _measured_rows(run_dir: Path) -> dict[tuple[str, str], dict]:
    """{(artifact, backend): its benchmark row} from the run's report, if any; only the rows that ran, and only
    CPU rows, since predict and serve run ONNX files on the CPU (a report made with --provider cuda timed GPU
    rows)."""
    path = benchmark_dir(run_dir) / REPORT_JSON
    if not path.is_file():
        return {}
    rows = {}
    for row in read_json(path).get("results", []):
        on_gpu = row.get("device") == "cuda" or row.get("provider") not in (None, "cpu")
        if row.get("status") != "ok" or not row.get("latency_ms") or (on_gpu and row.get("backend") != "tensorrt"):
            continue
        rows[(row["artifact"], row["backend"])] = row
    return rows


def _ms_per_image(row: dict) -> float:
    batch = min(row["latency_ms"], key=int)
    return row["latency_ms"][batch]["p50"] / int(batch)


def _runtime_checked(name: str, runtime: str, measured: dict[tuple[str, str], dict]) -> tuple[bool, str]:
    """onnxruntime, torch and TensorRT run what export checked; another runtime must have reproduced it in the
    benchmark: its agreement with PyTorch within RUNTIME_AGREEMENT_SLACK points of onnxruntime's on that file."""
    if runtime != "openvino":
        return True, ""
    row, reference = measured.get((name, runtime)), measured.get((name, "onnxruntime"))
    if row is None or reference is None:
        return False, f"{name} on {runtime} (not benchmarked beside onnxruntime)"
    gap = 100.0 * (reference["accuracy"]["agreement"] - row["accuracy"]["agreement"])
    if gap > RUNTIME_AGREEMENT_SLACK:
        return False, f"{name} on {runtime} (agrees with PyTorch {gap:.2f} points less than on onnxruntime)"
    return True, ""


def installed_runtimes(runtimes: Sequence[str] = CPU_RUNTIMES) -> tuple[str, ...]:
    import importlib.util

    modules = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch", "tensorrt": "tensorrt"}
    return tuple(r for r in runtimes if importlib.util.find_spec(modules[r]) is not None)


def choose_artifact(run_dir: Path, manifest: dict | None, *, artifact: str | None, backend: str | None,
                    threads: int | None = None, runtimes: Sequence[str] = CPU_RUNTIMES) -> ArtifactChoice:
    """The user's artifact (on its first runtime, or `backend`), else the fastest (artifact, runtime) pair the
    benchmark measured here among the installed `runtimes` (or just `backend`) whose artifact passed at export
    and whose runtime reproduced it; without a report, the expected fastest on the first runtime."""
    entries = {e["name"]: e for e in (manifest or {}).get("artifacts", [])}
    available = [PYTORCH, *entries]
    if artifact is not None and artifact not in available:
        raise RunFolderError(f"--artifact {artifact} is not in {run_dir}; it has {', '.join(available)}"
                             + ("" if manifest else " (run `vgg-deploy export` for the others)"))
    if backend is not None and backend not in EXPECTED_ORDER:
        raise VggDeployError(f"--backend must be one of {', '.join(EXPECTED_ORDER)} (got {backend})")
    if artifact is not None:
        backends = BACKENDS_FOR_FORMAT[_format_of(artifact, entries)]
        if backend is not None and backend not in backends:
            raise VggDeployError(f"--artifact {artifact} runs on {', '.join(backends)}, not on {backend}")
        return ArtifactChoice(_spec(run_dir, artifact, backend or backends[0], entries, threads), "as asked")

    backends = (backend,) if backend else installed_runtimes(runtimes)
    measured = _measured_rows(run_dir)
    # A runtime the user named is taken as asked; one the choice adds must have reproduced the checked file.
    candidates, refused = _candidates(entries, backends, measured, check_runtimes=backend is None)
    if not candidates:
        raise RunFolderError(f"no artifact of {run_dir} that passed at export runs on {', '.join(backends)}"
                             + (f"; not taken: {', '.join(refused)}" if refused else ""))
    timed = [c for c in candidates if c in measured]
    if timed:
        name, runtime = min(timed, key=lambda c: _ms_per_image(measured[c]))
        ms = _ms_per_image(measured[(name, runtime)])
        why = f"the fastest measured here that passed its checks ({ms:.2f} ms/image in benchmark/report.json"
        others = sorted(((_ms_per_image(measured[c]) / ms, c) for c in timed if c != (name, runtime)))
        why += (f"; next {others[0][1][0]} on {others[0][1][1]}, {others[0][0]:.2f}x slower)" if others else ")")
    else:
        name, runtime = candidates[0]
        why = "expected fastest that passed at export (no benchmark report to compare measured speeds)"
    if refused:
        why += f"; not taken: {', '.join(refused)}"
    return ArtifactChoice(_spec(run_dir, name, runtime, entries, threads), why)


def _candidates(entries: dict[str, dict], backends: Sequence[str], measured: dict[tuple[str, str], dict], *,
                check_runtimes: bool) -> tuple[list[tuple[str, str]], list[str]]:
    candidates, refused = [], []
    for runtime in backends:
        for name in EXPECTED_ORDER[runtime]:
            if name == PYTORCH:
                candidates.append((name, runtime))
                continue
            if name not in entries:
                continue
            ok, why = passed_at_export(entries[name])
            if not ok:
                if f"{name} ({why})" not in refused:
                    refused.append(f"{name} ({why})")
                continue
            checked, why = _runtime_checked(name, runtime, measured) if check_runtimes else (True, "")
            if checked:
                candidates.append((name, runtime))
            elif measured:
                refused.append(why)
    return candidates, refused


def _spec(run_dir: Path, name: str, backend: str, entries: dict[str, dict], threads: int | None) -> RunnerSpec:
    if name == PYTORCH:
        return RunnerSpec("torch", PYTORCH, str(run_dir), threads=threads)
    entry = entries[name]
    path = export_dir(run_dir) / entry["path"]
    if not still_valid(export_dir(run_dir), entry):
        raise RunFolderError(f"{path} is missing or differs from the manifest's sha256; re-run `vgg-deploy export`")
    return RunnerSpec(backend, name, str(path), precision=entry["precision"], threads=threads,
                      device="cuda" if backend == "tensorrt" else "cpu")
