"""The export step. Each artifact has its own small builder; this module orders them and keeps the books."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vgg_deploy.artifacts import EXPORT_DIR
from vgg_deploy.artifacts.manifest import ARTIFACT_NAMES, FILENAME, MANIFEST, PRECISION, artifact_entry, read_manifest, still_valid, write_manifest
from vgg_deploy.artifacts.tensorrt_meta import BatchProfile
from vgg_deploy.batches import EVAL_MEMORY_MB, eval_batches, load_batches, run_batches, stratified_sample
from vgg_deploy.console import console
from vgg_deploy.errors import ExportError, UnavailableError, VggDeployError
from vgg_deploy.export.onnx_fp32 import INPUT_NAME, OUTPUT_NAME, export_fp32
from vgg_deploy.fileio import check_writable_dir, sha256_file
from vgg_deploy.parity import compare
from vgg_deploy.runfolder import WEIGHTS, open_run
from vgg_deploy.runners import OnnxRuntimeRunner, TorchRunner

TENSORRT_QDQ = "model.int8.tensorrt-qdq.onnx"
# What each artifact is built from.
SOURCE = {"onnx-fp16": "onnx", "onnx-int8": "onnx", "trt-fp16": "onnx-fp16", "trt-int8": "onnx-int8"}


@dataclass
class ExportOptions:
    formats: list[str] = field(default_factory=lambda: ["onnx", "onnx-fp16", "onnx-int8"])
    calib_images: int = 128
    calib_method: str = "minmax"
    # INT8 from the range-equalized FP32 model (exact in FP32; calibration.equalize). Off by default: it fixed
    # INT8 on the learned 224 px model and made the 64 px demo's worse (benchmarks/README.md).
    equalize: bool = False
    max_accuracy_drop: float | None = None
    max_fp32_layers: int = 4
    check_images: int | None = 256  # test images for parity/accuracy figures, and val images for decisions (None: all)
    batch_size: int = 16
    eval_memory_mb: float = EVAL_MEMORY_MB  # check sets larger than this are streamed from disk on every pass
    profile: BatchProfile = field(default_factory=BatchProfile)
    workspace_gib: float = 4.0
    seed: int = 0
    triton_repo: str | None = None


def resolve_formats(requested: list[str]) -> tuple[list[str], dict[str, str]]:
    """(formats to build, in order, dependencies included; {format: why skipped}) for 'all' or a list."""
    want_all = "all" in requested
    unknown = [f for f in requested if f != "all" and f not in ARTIFACT_NAMES]
    if unknown:
        raise VggDeployError(f"unknown format(s) {', '.join(unknown)}; choose from all, {', '.join(ARTIFACT_NAMES)}")
    wanted = set(ARTIFACT_NAMES) if want_all else set(requested)
    skipped: dict[str, str] = {}
    if any(f.startswith("trt-") for f in wanted):
        from vgg_deploy.artifacts.tensorrt_meta import detect_environment

        try:
            detect_environment()
        except UnavailableError as err:
            if not want_all:
                raise UnavailableError(f"cannot build {', '.join(sorted(f for f in wanted if f.startswith('trt-')))}: {err}") from None
            for f in [f for f in wanted if f.startswith("trt-")]:
                skipped[f] = str(err)
                wanted.discard(f)
    closure = set(wanted)
    for f in wanted:
        while f in SOURCE:
            f = SOURCE[f]
            closure.add(f)
    return [f for f in ARTIFACT_NAMES if f in closure], skipped


def export(run_dir: str | Path, options: ExportOptions) -> dict:
    run = open_run(run_dir)
    formats, skipped = resolve_formats(options.formats)
    if options.triton_repo:
        from vgg_deploy.export.triton import require_model_config

        require_model_config()  # fail before the expensive work, not after it
    export_dir = check_writable_dir(run.path / EXPORT_DIR)
    model = run.load_model()
    checkpoint_sha = sha256_file(run.path / WEIGHTS)
    pp = run.preprocessing
    split = run.split()
    try:
        previous = read_manifest(export_dir)
    except VggDeployError:
        previous = {"artifacts": []}
    if previous.get("source_checkpoint_sha256") != checkpoint_sha:
        previous = {"artifacts": []}  # artifacts of another checkpoint are never carried over
    kept = {e["name"]: e for e in previous["artifacts"] if still_valid(export_dir, e)}

    if not split.test:
        raise ExportError(f"{run.path} has no test split (written by an older vgg-deploy); parity is reported on "
                          "images no decision saw, so re-run `vgg-deploy finetune` to get one")
    # Figures are reported on test; decisions (the INT8 budget) look at val only.
    test_batches, test_labels = eval_batches(
        stratified_sample(split.absolute(split.test), options.check_images, seed=options.seed), pp,
        batch_size=options.batch_size, memory_mb=options.eval_memory_mb)
    calib_items = stratified_sample(split.absolute(split.train), options.calib_images, seed=options.seed)
    decision_items, decision_images = _decision_items(split, options, calib_items)
    decision_batches, decision_labels = eval_batches(decision_items, pp, batch_size=options.batch_size,
                                                     memory_mb=options.eval_memory_mb)
    with TorchRunner(model, name="pytorch") as torch_runner:
        reference = run_batches(torch_runner, test_batches)
        decision_reference = run_batches(torch_runner, decision_batches)
    console.print(f"reference: PyTorch FP32 on {len(test_labels)} test images, "
                  f"top-1 {(reference.argmax(1) == test_labels).mean():.4f}")

    def ort_logits(path: Path, batches=test_batches) -> np.ndarray:
        with OnnxRuntimeRunner(path) as runner:
            return run_batches(runner, batches)

    def test_figures(path: Path) -> dict:
        return compare(reference, ort_logits(path), test_labels).with_drop()

    calib_cache: list[np.ndarray] = []

    def calibration_batches() -> list[np.ndarray]:
        if not calib_cache:
            calib_cache.extend(load_batches(calib_items, pp, batch_size=options.batch_size)[0])
        return calib_cache

    artifacts: dict[str, dict] = {}
    for name in formats:
        path = export_dir / FILENAME[name]
        if name == "onnx" and "onnx" in kept:
            artifacts[name] = kept[name]
            console.print(f"onnx: reusing {path.name} (same checkpoint, file unchanged)")
            continue
        console.print(f"{name}: building {path.name}")
        if name == "onnx":
            info = export_fp32(model, preprocessing=pp, class_names=run.class_names, out=path)
            figures = _checked_parity(name, "fp32", path, reference, ort_logits(path), test_labels)
            artifacts[name] = artifact_entry(export_dir, name, **info, parity=figures)
        elif name == "onnx-fp16":
            from vgg_deploy.export.fp16 import convert_fp16

            info = convert_fp16(export_dir / FILENAME["onnx"], path, batches=calibration_batches()[:2],
                                input_name=INPUT_NAME)
            if info["kept_fp32_nodes"]:
                console.print(f"onnx-fp16: kept in FP32 to avoid FP16 overflow: {', '.join(info['kept_fp32_nodes'])}")
            figures = _checked_parity(name, "fp16", path, reference, ort_logits(path), test_labels)
            artifacts[name] = artifact_entry(export_dir, name, fp16=info, parity=figures)
        elif name == "onnx-int8":
            from vgg_deploy.export.int8 import build_int8

            info = build_int8(
                export_dir / FILENAME["onnx"], path, fp32_sha256=artifacts["onnx"]["sha256"],
                calib_batches=calibration_batches(), input_name=INPUT_NAME, image_shape=(3, pp.image_size, pp.image_size),
                method=options.calib_method, cache_dir=export_dir / "calibration",
                evaluate=lambda p: ort_logits(p, decision_batches), reference_logits=decision_reference,
                labels=decision_labels, decision_images=decision_images, report=test_figures,
                max_accuracy_drop=options.max_accuracy_drop, max_fp32_layers=options.max_fp32_layers,
                equalize=options.equalize,
            )
            artifacts[name] = artifact_entry(export_dir, name, **info)
        else:
            artifacts[name] = _build_trt(name, export_dir, pp.image_size, options, source_entry=artifacts[SOURCE[name]],
                                         check=lambda name, path: _engine_parity(name, path, reference, test_batches,
                                                                                 test_labels, options),
                                         fp16_overflow=lambda: _fp16_overflow(artifacts, export_dir, calibration_batches))

    entries = {**{k: v for k, v in kept.items() if k not in artifacts}, **artifacts}
    manifest = {
        "run": str(run.path.resolve()),
        "source_checkpoint_sha256": checkpoint_sha,
        "class_names": run.class_names,
        "preprocessing": pp.to_dict(),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, pp.image_size, pp.image_size], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(run.class_names)], "dtype": "float32"},
        "checks": {"test_images": int(len(test_labels)), "decision_images": decision_images,
                   "reference": "pytorch fp32 eager"},
        "skipped": [{"name": k, "reason": v} for k, v in skipped.items()],
        "artifacts": list(entries.values()),
    }
    write_manifest(export_dir, manifest)
    for name, reason in skipped.items():
        console.print(f"skipped {name}: {reason}")
    if options.triton_repo:
        from vgg_deploy.export.triton import write_triton_repo

        models = write_triton_repo(export_dir, manifest, Path(options.triton_repo), max_batch_size=options.profile.max,
                                   preferred_batch_sizes=[options.profile.opt, options.profile.max])
        console.print(f"triton repository: {options.triton_repo} ({', '.join(models)})")
    console.print(f"manifest: {export_dir / MANIFEST} ({len(manifest['artifacts'])} artifacts)")
    return manifest


def _fp16_overflow(artifacts: dict, export_dir: Path, calibration_batches) -> dict:
    """The FP16 artifact's overflow check when this export built one, else the same check run now."""
    if "onnx-fp16" in artifacts:
        return artifacts["onnx-fp16"]["fp16"]
    from vgg_deploy.export.fp16 import overflow_nodes

    return overflow_nodes(export_dir / FILENAME["onnx"], calibration_batches()[:2], input_name=INPUT_NAME)


def _decision_items(split, options: ExportOptions, calib_items) -> tuple[list, dict]:
    """The images INT8's decisions look at: val, topped up to DECISION_MIN_IMAGES with training images that
    calibration did not use. Never test."""
    from vgg_deploy.export.int8 import DECISION_MIN_IMAGES

    val = stratified_sample(split.absolute(split.val), options.check_images, seed=options.seed)
    used = {path for path, _ in calib_items}
    spare = [item for item in split.absolute(split.train) if item[0] not in used]
    top_up = stratified_sample(spare, max(0, DECISION_MIN_IMAGES - len(val)), seed=options.seed) if len(val) < DECISION_MIN_IMAGES else []
    images = {"images": len(val) + len(top_up), "val": len(val), "train_not_calibrated": len(top_up)}
    if images["images"] < DECISION_MIN_IMAGES:
        console.print(f"int8: warning: only {images['images']} images for INT8 decisions (val plus training images "
                      f"calibration did not use); fewer than {DECISION_MIN_IMAGES} makes them coarse")
    return [*val, *top_up], images


def _checked_parity(name, precision, path: Path, reference, logits, labels) -> dict:
    parity = compare(reference, logits, labels)
    console.print(f"{name}: parity with PyTorch: {parity.summary()}")
    if not parity.within(precision):
        path.unlink(missing_ok=True)
        raise ExportError(f"{name} is beyond parity tolerance with PyTorch: {parity.summary()}"
                          + (f", {parity.non_finite} non-finite logits" if parity.non_finite else ""))
    return parity.to_dict()


def _engine_parity(name: str, path: Path, reference, test_batches, test_labels, options: ExportOptions) -> dict:
    """An engine is checked against PyTorch on test like the ONNX files: FP16 within FP16's tolerance, INT8
    within --max-accuracy-drop when one is given (its figures are recorded either way)."""
    from vgg_deploy.runners.tensorrt_runner import TensorRTRunner

    precision = PRECISION[name]
    with TensorRTRunner(path, name=name, precision=precision) as runner:
        logits = run_batches(runner, test_batches)
    if precision != "int8":
        return _checked_parity(name, precision, path, reference, logits, test_labels)
    parity = compare(reference, logits, test_labels)
    figures = parity.with_drop()
    console.print(f"{name}: against PyTorch: {parity.summary()}")
    problem = None
    if parity.non_finite:
        problem = f"{name} gives {parity.non_finite} non-finite logits"
    elif options.max_accuracy_drop is not None and figures["drop_points"] > options.max_accuracy_drop:
        problem = (f"{name} loses {figures['drop_points']:.2f} points of test top-1 against PyTorch, beyond "
                   f"--max-accuracy-drop {options.max_accuracy_drop}")
    if problem:
        path.unlink(missing_ok=True)
        raise ExportError(problem)
    return {**figures, "max_accuracy_drop": options.max_accuracy_drop}


def _build_trt(name: str, export_dir: Path, image_size: int, options: ExportOptions, *, source_entry: dict,
               check, fp16_overflow) -> dict:
    """`fp16_overflow()`: which nodes FP16 would overflow (the INT8 engine's float parts are FP16)."""
    from vgg_deploy.export.tensorrt_build import build_engine
    from vgg_deploy.artifacts.tensorrt_meta import (
        detect_environment,
        make_sidecar,
        sidecar_path,
        timing_cache_name,
        write_sidecar,
    )

    env = detect_environment()
    source = export_dir / FILENAME[SOURCE[name]]
    source_sha256 = source_entry["sha256"]
    if name == "trt-int8":
        from vgg_deploy.export.int8 import write_tensorrt_qdq

        # The CPU artifact's Q/DQ sits on op outputs too; TensorRT gets its own placement of the same ranges.
        source, tensorrt_source = write_tensorrt_qdq(
            export_dir / FILENAME["onnx"], export_dir / TENSORRT_QDQ, int8_entry=source_entry,
            cache_dir=export_dir / "calibration", keep_fp32_nodes=fp16_overflow()["kept_fp32_nodes"])
        source_sha256 = sha256_file(source)
    engine = export_dir / FILENAME[name]
    workspace = int(options.workspace_gib * (1 << 30))
    build_engine(source, engine, env=env, input_name=INPUT_NAME, image_size=image_size, profile=options.profile,
                 workspace_bytes=workspace, timing_cache=export_dir / timing_cache_name(env))
    sidecar = make_sidecar(env=env, precision=PRECISION[name], profile=options.profile, source_onnx=source.name,
                           source_sha256=source_sha256, input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                           image_size=image_size, strongly_typed=True, workspace_bytes=workspace)
    write_sidecar(engine, sidecar)  # before the check: the runner refuses an engine without one
    try:
        figures = check(name, engine)
    except ExportError:
        sidecar_path(engine).unlink(missing_ok=True)
        raise
    extra = {"tensorrt_source": tensorrt_source} if name == "trt-int8" else {}
    return artifact_entry(export_dir, name, engine=sidecar, parity=figures, **extra)
