"""How the data checks and evaluation scale: 1k, 10k and 100k synthetic JPEGs.

For each folder size:
- scan (scan_image_folder) and check (image_check.check_images): cold with 1 worker, cold with every usable
  core, and cached (a re-check of the unchanged folder). "Cold" means no cached verdicts; the files
  themselves are in the OS page cache, having just been written, so disk reads are not measured;
- peak memory of the benchmark's accuracy pass (benchmark.pipeline._evaluate, the real code path) with the
  evaluation set held in memory and streamed, each in a fresh process. The runner is a tiny ONNX model
  (global average pool + linear, 224 px input), so the figure is the data path's memory, not VGG16's.

A per-file decode cost is also measured on ImageNet-sized JPEGs (500x375) for the ImageNet projection.

    python benchmarks/scale.py [--sizes 1000,10000,100000] [--out benchmarks/results/scale.json]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 10
DISTINCT = 256  # distinct encoded images, written round-robin: decoding cost does not depend on uniqueness
SMALL_SIDE = (256, 192)
IMAGENET_SIDE = (500, 375)
EVAL_SIZE = 224


def _jpegs(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(count):
        # Smooth noise compresses like a photo (a few tens of KB), unlike white noise.
        small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(size, Image.BICUBIC)
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=85)
        blobs.append(buffer.getvalue())
    return blobs


def make_folder(root: Path, count: int, blobs: list[bytes]) -> float:
    started = time.perf_counter()
    for c in range(CLASSES):
        (root / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"class_{i % CLASSES:02d}" / f"img_{i:07d}.jpg").write_bytes(blobs[i % len(blobs)])
    return time.perf_counter() - started


def _child(code: str) -> dict:
    """Run `code` (which prints one JSON line last) in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


CHECK_CODE = """
import json, time
from pathlib import Path
from vgg_deploy.data import scan_image_folder
from vgg_deploy.image_check import check_images
t = time.perf_counter(); _, samples = scan_image_folder(Path({root!r})); scan = time.perf_counter() - t
paths = [p for p, _ in samples]
t = time.perf_counter(); bad = check_images(paths, mode={mode!r}, workers={workers}, cache_path=Path({cache!r}))
check = time.perf_counter() - t
print(json.dumps({{"scan_s": scan, "check_s": check, "files": len(paths), "bad": len(bad)}}))
"""

MEMORY_CODE = """
import json, resource, time
from pathlib import Path
import numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
from vgg_deploy.batches import eval_batches
from vgg_deploy.benchmark.pipeline import _evaluate
from vgg_deploy.data import scan_image_folder
from vgg_deploy.preprocessing import Preprocessing
from vgg_deploy.runners import OnnxRuntimeRunner

weights = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, {classes})).astype(np.float32), "w")
graph = helper.make_graph(
    [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
     helper.make_node("Flatten", ["pooled"], ["flat"]),
     helper.make_node("MatMul", ["flat", "w"], ["logits"])],
    "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, {size}, {size}])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", {classes}])], [weights])
model_path = Path({tmp!r}) / "tiny.onnx"
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model_path)

class_names, samples = scan_image_folder(Path({root!r}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
batches, labels = eval_batches(samples, Preprocessing.for_image_size({size}), batch_size=16, memory_mb={memory_mb})
result = _evaluate(OnnxRuntimeRunner(model_path, name="tiny"), batches, labels, None, class_names)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert result["status"] == "ok", result
print(json.dumps({{"streamed": batches.streamed, "images": len(labels), "seconds": seconds,
                  "rss_before_mb": before / 1024, "peak_rss_mb": peak / 1024}}))
"""


def measure_checks(root: Path, tmp: Path, cores: int, rounds: int) -> dict:
    """Median of `rounds` alternating rounds of serial, parallel (cold) and cached, each in its own process:
    this machine's speed drifts by more than the effect between two runs far apart."""
    def check(mode: str, workers: int, cache: Path) -> dict:
        return _child(CHECK_CODE.format(root=str(root), mode=mode, workers=workers, cache=str(cache)))

    times: dict[str, list[float]] = {"scan": [], "serial": [], "parallel": [], "cached": []}
    files = 0
    for r in range(rounds):
        serial = check("full", 1, tmp / f"serial-{root.name}-{r}.sqlite")
        parallel_cache = tmp / f"parallel-{root.name}-{r}.sqlite"
        parallel = check("cached", cores, parallel_cache)  # an empty cache: every file decoded
        cached = check("cached", cores, parallel_cache)
        files = serial["files"]
        for name, result in (("serial", serial), ("parallel", parallel), ("cached", cached)):
            times[name].append(result["check_s"])
        times["scan"].append(serial["scan_s"])
    med = {name: float(np.median(values)) for name, values in times.items()}
    return {"files": files, "rounds": rounds, "scan_s": med["scan"], "serial_s": med["serial"],
            "parallel_s": med["parallel"], "cached_s": med["cached"], "all_rounds_s": times,
            "parallel_speedup": med["serial"] / med["parallel"],
            "cached_pct_of_cold": 100 * med["cached"] / med["parallel"],
            "per_file_serial_ms": 1e3 * med["serial"] / files,
            "per_file_cached_us": 1e6 * med["cached"] / files}


def measure_memory(root: Path, tmp: Path, streamed: bool) -> dict:
    return _child(MEMORY_CODE.format(classes=CLASSES, size=EVAL_SIZE, tmp=str(tmp), root=str(root),
                                     memory_mb=0 if streamed else 1e9))


def imagenet_decode_ms(tmp: Path, files: int = 200) -> float:
    folder = tmp / "imagenet-sized"
    folder.mkdir()
    blobs = _jpegs(16, IMAGENET_SIDE, seed=1)
    paths = []
    for i in range(files):
        path = folder / f"{i}.jpg"
        path.write_bytes(blobs[i % len(blobs)])
        paths.append(path)
    from vgg_deploy.image_check import check_images

    started = time.perf_counter()
    check_images(paths, mode="full", workers=1, cache_path=tmp / "imagenet.sqlite")
    return 1e3 * (time.perf_counter() - started) / files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="check,memory", help="what to measure; the rest is kept from --out")
    parser.add_argument("--held-max", type=int, default=10000, help="largest size also evaluated held in memory")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scale.json"))
    args = parser.parse_args()
    from vgg_deploy.benchmark.machine import describe_machine
    from vgg_deploy.image_check import usable_cores

    cores = usable_cores()
    out = Path(args.out)
    parts = args.parts.split(",")
    previous = json.loads(out.read_text()) if out.is_file() else {}
    kept = {entry["images"]: entry for entry in previous.get("sizes", [])}
    report = {**previous, "machine": describe_machine(), "usable_cores": cores, "image_side": SMALL_SIDE,
              "eval_image_size": EVAL_SIZE, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="vgg-deploy-scale-") as tmp_name:
        tmp = Path(tmp_name)
        if "check" in parts:
            report["imagenet_sized_decode_ms"] = imagenet_decode_ms(tmp)
            print(f"500x375 JPEG check: {report['imagenet_sized_decode_ms']:.2f} ms per file, one core", flush=True)
        blobs = _jpegs(DISTINCT, SMALL_SIDE)
        report["mean_file_kb"] = float(np.mean([len(b) for b in blobs]) / 1024)
        for size in (int(s) for s in args.sizes.split(",")):
            root = tmp / f"data-{size}"
            entry = {**kept.get(size, {}), "images": size, "write_s": make_folder(root, size, blobs)}
            if "check" in parts:
                entry["check"] = measure_checks(root, tmp, cores, args.rounds)
                print(f"{size}: {json.dumps(entry['check'])}", flush=True)
            if "memory" in parts:
                entry["memory"] = {"streamed": measure_memory(root, tmp, streamed=True)}
                if size <= args.held_max:
                    entry["memory"]["held"] = measure_memory(root, tmp, streamed=False)
                print(f"{size}: {json.dumps(entry['memory'])}", flush=True)
            report["sizes"].append(entry)
            subprocess.run(["rm", "-rf", str(root)], check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
