#!/usr/bin/env bash
# The whole GPU path in one command, for whoever has a CUDA GPU (this project's CI machines have none):
#   bash benchmarks/gpu_check.sh [OUT]            (OUT defaults to gpu-check/)
# 1. the GPU tests (tests/gpu: CUDA training step under autocast, CUDA runners, TensorRT where installed);
# 2. a small real pipeline on the GPU: sample data (3 classes, 64 px), finetune --device cuda, prune --device
#    cuda (2 steps: Taylor scores and distilled recovery on the GPU), export of the finetune run (ONNX
#    FP32/FP16/INT8, plus TensorRT engines with their parity check when `tensorrt` imports), and benchmark
#    --provider cuda (and --provider tensorrt when onnxruntime has that provider), 2 rounds;
# 3. OUT/summary.json: what ran, what was skipped and why, and the key figures.
# It takes a few minutes on one GPU (the training is 2 short epochs). GPU_CHECK_DEVICE=cpu runs steps 2-3 on
# the CPU, only to check the script itself on a machine without a GPU.
set -uo pipefail
OUT=${1:-gpu-check}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PYTHON:-python}
mkdir -p "$OUT"
status=0
step() { echo "== $*" >&2; }

if [ "$DEVICE" = cuda ] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: torch sees no CUDA GPU here; nothing to check (GPU_CHECK_DEVICE=cpu checks the script only)" >&2
  exit 2
fi
HAS_TRT=$("$PY" -c 'import tensorrt' 2>/dev/null && echo 1 || echo 0)
# A provider counts only if a session with it comes up (get_available_providers lists what the wheel was built
# with, not what loads); the reason it does not is written to OUT/providers.log.
probe() { "$PY" -c "import sys; from vgg_deploy.runners.providers import provider_problem as p; r = p('$1'); print('$1:', r or 'loads'); sys.exit(0 if r is None else 1)" >> "$OUT/providers.log" 2>&1; }
: > "$OUT/providers.log"
HAS_ORT_CUDA=$(probe CUDAExecutionProvider && echo 1 || echo 0)
HAS_ORT_TRT=$(probe TensorrtExecutionProvider && echo 1 || echo 0)
cat "$OUT/providers.log" >&2

if [ "$DEVICE" = cuda ]; then
  step "GPU tests"
  "$PY" -m pytest -m gpu tests/gpu -q -rs --junitxml="$OUT/gpu-tests.xml" > "$OUT/gpu-tests.log" 2>&1 || status=1
  tail -3 "$OUT/gpu-tests.log" >&2
fi

step "sample data and finetune on $DEVICE"
rm -rf "$OUT/data" "$OUT/run"
"$PY" -m vgg_deploy sample-data "$OUT/data" --images-per-class 40 --size 64 > /dev/null || status=1
for extra in cross stripes checker; do rm -rf "$OUT/data/$extra"; done
"$PY" -m vgg_deploy finetune "$OUT/data" --out "$OUT/run" --weights none --case large-different --image-size 64 \
  --epochs 2 --batch-size 16 --device "$DEVICE" > "$OUT/finetune.log" 2>&1 || status=1

step "prune on $DEVICE (scoring, surgery and distilled recovery on the device)"
rm -rf "$OUT/pruned"
"$PY" -m vgg_deploy prune "$OUT/run" --out "$OUT/pruned" --target-macs 0.6 --steps 2 --epochs 1 --batch-size 16 \
  --latency-rounds 1 --device "$DEVICE" > "$OUT/prune.log" 2>&1 || status=1

formats=onnx,onnx-fp16,onnx-int8
[ "$HAS_TRT" = 1 ] && [ "$DEVICE" = cuda ] && formats=$formats,trt-fp16,trt-int8
step "export $formats"
"$PY" -m vgg_deploy export "$OUT/run" --formats "$formats" --calib-images 32 --check-images 24 \
  > "$OUT/export.log" 2>&1 || status=1

providers=cpu
[ "$DEVICE" = cuda ] && [ "$HAS_ORT_CUDA" = 1 ] && providers=cuda
[ "$HAS_ORT_TRT" = 1 ] && [ "$DEVICE" = cuda ] && providers="$providers tensorrt"
for provider in $providers; do
  step "benchmark --provider $provider"
  "$PY" -m vgg_deploy benchmark "$OUT/run" --provider "$provider" --rounds 2 --batch-sizes 1,8 --iterations 20 \
    --time-budget 2 > "$OUT/benchmark-$provider.log" 2>&1 || status=1
  cp "$OUT/run/benchmark/report.json" "$OUT/report-$provider.json" 2>/dev/null || status=1
done

"$PY" - "$OUT" "$DEVICE" "$HAS_TRT" "$HAS_ORT_TRT" "$status" <<'PYEOF'
import json, sys
from pathlib import Path
out, device, has_trt, has_ort_trt, status = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1", int(sys.argv[5])
def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
model = load(out / "run" / "model.json") or {}
manifest = load(out / "run" / "export" / "manifest.json") or {}
summary = {
    "device": device, "tensorrt_installed": has_trt, "onnxruntime_tensorrt_provider": has_ort_trt,
    "exit_status": status,
    "provider_probes": (out / "providers.log").read_text().splitlines() if (out / "providers.log").is_file() else [],
    "training": model.get("training"), "test_top1": (model.get("metrics") or {}).get("test", {}).get("top1"),
    "artifacts": {a["name"]: {k: a.get(k) for k in ("precision", "parity", "tensorrt_source") if a.get(k) is not None}
                  for a in manifest.get("artifacts", [])},
    "skipped_artifacts": manifest.get("skipped", []),
    "benchmarks": {},
    "prune": [{k: r.get(k) for k in ("step", "keep", "macs", "val_top1_before_recovery", "val_top1", "test_top1")}
              for r in ((load(out / "pruned" / "model.json") or {}).get("pruning") or {}).get("steps_report", [])],
    "prune_training": (load(out / "pruned" / "model.json") or {}).get("training"),
}
for report_path in sorted(out.glob("report-*.json")):
    report = load(report_path) or {}
    summary["benchmarks"][report_path.stem.removeprefix("report-")] = [
        {"artifact": r["artifact"], "backend": r["backend"], "status": r["status"], "device": r.get("device"),
         "top1": (r.get("accuracy") or {}).get("top1"),
         "p50_ms": {b: v["p50"] for b, v in (r.get("latency_ms") or {}).items()}, "reason": r.get("reason")}
        for r in report.get("results", [])]
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: summary[k] for k in ("device", "tensorrt_installed", "exit_status", "test_top1")}))
PYEOF
exit $status
