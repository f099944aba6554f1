from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from vgg_deploy.cli.errors import user_errors


class Provider(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"


def benchmark_command(
    run: Path = typer.Argument(..., help="Run folder with an export/manifest.json."),
    batch_sizes: str = typer.Option("1,8,32", help="Comma-separated batch sizes to time."),
    data: Path = typer.Option(None, help="ImageFolder to evaluate on instead of the run's test split (same classes)."),
    threads: int = typer.Option(None, min=1, help="CPU threads for every runtime (default: physical cores, SMT siblings once)."),
    max_accuracy_drop: float = typer.Option(
        None, min=0.0, help="Exit 3 if any artifact's top-1 is more than this many points below the baseline."
    ),
    provider: Provider = typer.Option(Provider.cpu, help="onnxruntime execution provider for the ONNX artifacts."),
    backends: str = typer.Option(
        "auto", help="Runtimes for ONNX artifacts, comma-separated: onnxruntime, openvino (same files); auto: "
        "each one installed."
    ),
    iterations: int = typer.Option(100, min=1, help="Most timed iterations per artifact and batch size."),
    time_budget: float = typer.Option(10.0, min=0.0, help="Seconds of timing per artifact and batch size."),
    warmup: int = typer.Option(5, min=0, help="Warm-up iterations (and at least one second) before timing."),
    eval_memory_mb: float = typer.Option(2048, min=0.0, help="Evaluation images are held in memory as uint8 crops "
                                         "up to this many MB, and streamed from disk on each pass above it."),
    rounds: int = typer.Option(5, min=1, help="Each row is timed in its own process this many times, alternating "
                               "with the others; p50 is the median of the per-round medians."),
) -> None:
    """Accuracy and latency of every exported artifact beside the PyTorch FP32 baseline."""
    from vgg_deploy.benchmark.pipeline import BenchmarkOptions, benchmark
    from vgg_deploy.timing.stats import TimingPolicy

    with user_errors():
        from vgg_deploy.benchmark.machine import physical_cores
        from vgg_deploy.process import use_threads

        use_threads(threads or physical_cores())
        sizes = _parse_batch_sizes(batch_sizes)
        options = BenchmarkOptions(
            batch_sizes=sizes, data=str(data) if data else None, threads=threads, max_accuracy_drop=max_accuracy_drop,
            provider=provider.value, onnx_backends=_parse_backends(backends),
            timing=TimingPolicy(warmup_iterations=warmup, min_iterations=min(5, iterations), max_iterations=iterations,
                                time_budget_s=time_budget),
            rounds=rounds, eval_memory_mb=eval_memory_mb,
        )
        benchmark(run, options)


def _parse_backends(text: str) -> list[str]:
    from vgg_deploy.artifacts.choice import installed_runtimes
    from vgg_deploy.benchmark.pipeline import ONNX_BACKENDS

    if text.strip() == "auto":
        return list(installed_runtimes(ONNX_BACKENDS))
    return [b.strip() for b in text.split(",") if b.strip()]


def _parse_batch_sizes(text: str) -> list[int]:
    from vgg_deploy.errors import VggDeployError

    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise VggDeployError(f"--batch-sizes must be comma-separated integers (got {text!r})") from None
    if not sizes or min(sizes) < 1:
        raise VggDeployError(f"--batch-sizes must be positive integers (got {text!r})")
    return sizes
