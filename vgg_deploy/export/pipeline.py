"""The export step: RUN/ -> RUN/export/. Each artifact has its own builder (builders.BUILDERS); this module
orders them, reuses what is still valid and keeps the books (manifest.json)."""

from __future__ import annotations

from pathlib import Path

from vgg_deploy.artifacts import EXPORT_DIR
from vgg_deploy.artifacts.manifest import ARTIFACT_NAMES, MANIFEST, read_manifest, still_valid, write_manifest
from vgg_deploy.console import console
from vgg_deploy.errors import UnavailableError, VggDeployError
from vgg_deploy.export.builders import BUILDERS, SOURCE
from vgg_deploy.export.context import ExportContext, make_context
from vgg_deploy.export.onnx_fp32 import INPUT_NAME, OUTPUT_NAME
from vgg_deploy.export.options import ExportOptions
from vgg_deploy.fileio import check_writable_dir, sha256_file
from vgg_deploy.runfolder import WEIGHTS, open_run

__all__ = ["ExportOptions", "export", "resolve_formats"]


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
    checkpoint_sha = sha256_file(run.path / WEIGHTS)
    reusable = _reusable_entries(export_dir, checkpoint_sha)
    ctx = make_context(run, options, export_dir)
    for name in formats:
        if name == "onnx" and "onnx" in reusable:
            ctx.artifacts[name] = reusable[name]
            console.print(f"onnx: reusing {ctx.path(name).name} (same checkpoint, file unchanged)")
            continue
        console.print(f"{name}: building {ctx.path(name).name}")
        ctx.artifacts[name] = BUILDERS[name](ctx, name)
    manifest = _manifest(ctx, {**{k: v for k, v in reusable.items() if k not in ctx.artifacts}, **ctx.artifacts},
                         skipped, checkpoint_sha)
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


def _reusable_entries(export_dir: Path, checkpoint_sha: str) -> dict[str, dict]:
    """The previous manifest's entries whose files are unchanged; none from another checkpoint's export."""
    try:
        previous = read_manifest(export_dir)
    except VggDeployError:
        return {}
    if previous.get("source_checkpoint_sha256") != checkpoint_sha:
        return {}
    return {e["name"]: e for e in previous["artifacts"] if still_valid(export_dir, e)}


def _manifest(ctx: ExportContext, entries: dict[str, dict], skipped: dict[str, str], checkpoint_sha: str) -> dict:
    run, pp = ctx.run, ctx.run.preprocessing
    return {
        "run": str(run.path.resolve()),
        "source_checkpoint_sha256": checkpoint_sha,
        "class_names": run.class_names,
        "preprocessing": pp.to_dict(),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, pp.image_size, pp.image_size], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(run.class_names)], "dtype": "float32"},
        "checks": {"test_images": int(len(ctx.test_labels)), "decision_images": ctx.decision_images,
                   "reference": "pytorch fp32 eager"},
        "skipped": [{"name": k, "reason": v} for k, v in skipped.items()],
        "artifacts": list(entries.values()),
    }
