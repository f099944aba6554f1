"""Load test for `vgg-deploy serve`: a real tritonserver on loopback, tritonclient over HTTP and gRPC, at
concurrency 1, 4 and 16, with and without Triton's dynamic batching; compared with the offline benchmark
of the same artifact: the same file on the same runtime without a server, measured in the same run.

    python benchmarks/serve_bench.py demo/run --artifact onnx-int8 --requests 400 --seconds 20

Each client thread sends batch-1 requests of the run's own preprocessed test images, one after the other,
until the level's request count or time limit is reached, whichever comes first; then the next level starts.
Client and server share this machine's cores, as they would on a single-box deployment, so the client's own
cost is part of what is measured. Results: benchmarks/results/serve_bench.json.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

from vgg_deploy.benchmark.machine import describe_machine
from vgg_deploy.imaging import load_rgb
from vgg_deploy.runfolder import open_run
from vgg_deploy.serve import ServeOptions, TritonServer
from vgg_deploy.timing.stats import TimingPolicy, measure, summarize

RESULTS = Path(__file__).parent / "results" / "serve_bench.json"


def _client(protocol: str, url: str):
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module, module.InferenceServerClient(url)


def load_level(server: TritonServer, protocol: str, images: np.ndarray, *, concurrency: int, requests: int,
               seconds: float) -> dict:
    url = server.http_url if protocol == "http" else server.grpc_url
    latencies: list[float] = []  # seconds
    errors: list[str] = []
    lock = threading.Lock()
    sent = iter(range(requests))
    deadline = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        module, client = _client(protocol, url)
        tensor = module.InferInput("input", [1, *images.shape[1:]], "FP32")
        for n in sent:  # shared iterator: the level's request count is bounded across every thread
            if time.perf_counter() > deadline:
                return
            tensor.set_data_from_numpy(images[(seed + n) % len(images)][None])
            start = time.perf_counter()
            try:
                client.infer(server.model_name, [tensor]).as_numpy("logits")
            except Exception as err:  # recorded per level: a load test reports failures, it does not stop on them
                with lock:
                    errors.append(str(err)[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    stats, _ = summarize(latencies, batch_size=1) if latencies else ({}, 0.0)
    return {"protocol": protocol, "concurrency": concurrency, "completed": len(latencies), "errors": len(errors),
            "first_error": errors[0] if errors else None, "seconds": wall,
            "throughput_per_s": len(latencies) / wall, "p50_ms": stats.get("p50"), "p99_ms": stats.get("p99"),
            "mean_ms": stats.get("mean"), "too_few_samples_for": stats.get("too_few_samples_for")}


def offline_levels(run: Path, artifact: str, images: np.ndarray, *, batch_sizes: list[int], seconds: float) -> list:
    """The same file on the same runtime, in this process, without a server: what serving adds is the
    difference. Measured in this run, beside the served levels, not taken from an older report."""
    from vgg_deploy.artifacts.manifest import read_manifest
    from vgg_deploy.runners.spec import RunnerSpec, build_runner

    entry = next(e for e in read_manifest(run / "export")["artifacts"] if e["name"] == artifact)
    spec = RunnerSpec("onnxruntime", artifact, str(run / "export" / entry["path"]), precision=entry["precision"])
    levels = []
    with build_runner(spec) as runner:
        for batch_size in batch_sizes:
            batch = np.resize(images, (batch_size, *images.shape[1:]))
            durations = measure(lambda batch=batch: runner.infer(batch), TimingPolicy(max_iterations=1000, time_budget_s=seconds))
            stats, _ = summarize(durations, batch_size=batch_size)
            levels.append({"batch_size": batch_size, "calls": stats["iterations"], "p50_ms": stats["p50"],
                           "images_per_s": batch_size * 1e3 / stats["p50"]})
    return levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--artifact", default="onnx-int8")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=400, help="per level, across all client threads")
    parser.add_argument("--seconds", type=float, default=20.0, help="per level")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-queue-delay-us", type=int, default=500)
    args = parser.parse_args()
    run = open_run(args.run)
    split = run.split()
    transform = run.preprocessing.eval_transform()
    images = np.stack([transform(load_rgb(path)).numpy() for path, _ in split.absolute(split.test)])
    levels = [int(c) for c in args.concurrency.split(",")]
    offline = offline_levels(args.run, args.artifact, images, batch_sizes=[1, args.max_batch], seconds=10)
    print(json.dumps({"offline": offline}), flush=True)
    results = []
    for dynamic in (True, False):
        options = ServeOptions(artifact=args.artifact, http_port=0, grpc_port=0, metrics_port=0,
                               max_batch=args.max_batch, max_queue_delay_us=args.max_queue_delay_us,
                               dynamic_batching=dynamic)
        with TritonServer(args.run, options) as server:
            for protocol in ("http", "grpc"):
                load_level(server, protocol, images, concurrency=1, requests=20, seconds=5)  # warm-up
                for concurrency in levels:
                    level = load_level(server, protocol, images, concurrency=concurrency, requests=args.requests,
                                       seconds=args.seconds)
                    level["dynamic_batching"] = dynamic
                    results.append(level)
                    print(json.dumps(level), flush=True)
    record = {"run": str(args.run), "artifact": args.artifact, "image_size": run.preprocessing.image_size,
              "settings": vars(args) | {"run": str(args.run)}, "machine": describe_machine(),
              "offline": offline, "levels": results}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
