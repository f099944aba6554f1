"""Which artifact, on which runtime: the user's pick, checked, or the fastest one that passed at export."""

from __future__ import annotations

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


def _measured_latency(run_dir: Path) -> dict[tuple[str, str], float]:
    """{(artifact, backend): ms per image at the smallest batch} from the run's benchmark report, if any; only
    CPU rows, since predict runs ONNX files on the CPU (a report made with --provider cuda timed GPU rows)."""
    path = benchmark_dir(run_dir) / REPORT_JSON
    if not path.is_file():
        return {}
    figures = {}
    for row in read_json(path).get("results", []):
        latency = row.get("latency_ms") or {}
        on_gpu = row.get("device") == "cuda" or row.get("provider") not in (None, "cpu")
        if row.get("status") != "ok" or not latency or (on_gpu and row.get("backend") != "tensorrt"):
            continue
        batch = min(latency, key=int)
        figures[(row["artifact"], row["backend"])] = latency[batch]["p50"] / int(batch)
    return figures


def choose_artifact(run_dir: Path, manifest: dict | None, *, artifact: str | None, backend: str | None,
                    threads: int | None = None) -> ArtifactChoice:
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

    backends = (backend,) if backend else ("onnxruntime", "torch")
    measured = _measured_latency(run_dir)
    candidates, refused = [], []
    for runtime in backends:
        for name in EXPECTED_ORDER[runtime]:
            if name == PYTORCH:
                candidates.append((name, runtime))
                continue
            if name not in entries:
                continue
            ok, why = passed_at_export(entries[name])
            if ok:
                candidates.append((name, runtime))
            else:
                refused.append(f"{name} ({why})")
    if not candidates:
        raise RunFolderError(f"no artifact of {run_dir} that passed at export runs on {', '.join(backends)}"
                             + (f"; not taken: {', '.join(refused)}" if refused else ""))
    timed = [c for c in candidates if c in measured]
    if timed:
        name, runtime = min(timed, key=measured.get)
        why = f"the fastest that passed at export ({measured[(name, runtime)]:.2f} ms/image in benchmark/report.json)"
    else:
        name, runtime = candidates[0]
        why = "expected fastest that passed at export (no benchmark report to compare measured speeds)"
    if refused:
        why += f"; not taken: {', '.join(refused)}"
    return ArtifactChoice(_spec(run_dir, name, runtime, entries, threads), why)


def _spec(run_dir: Path, name: str, backend: str, entries: dict[str, dict], threads: int | None) -> RunnerSpec:
    if name == PYTORCH:
        return RunnerSpec("torch", PYTORCH, str(run_dir), threads=threads)
    entry = entries[name]
    path = export_dir(run_dir) / entry["path"]
    if not still_valid(export_dir(run_dir), entry):
        raise RunFolderError(f"{path} is missing or differs from the manifest's sha256; re-run `vgg-deploy export`")
    return RunnerSpec(backend, name, str(path), precision=entry["precision"], threads=threads,
                      device="cuda" if backend == "tensorrt" else "cpu")
