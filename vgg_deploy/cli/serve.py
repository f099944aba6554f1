from __future__ import annotations

import signal
from enum import Enum
from pathlib import Path

import typer

from vgg_deploy.cli.errors import user_errors


class ServeBackend(str, Enum):
    onnxruntime = "onnxruntime"
    openvino = "openvino"


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # a service manager's stop is Ctrl-C: the same orderly shutdown


def serve_command(
    run: Path = typer.Argument(..., help="An exported run folder."),
    artifact: str = typer.Option(None, help="onnx, onnx-fp16 or onnx-int8 (default: the fastest that passed its "
                                 "accuracy check at export, as for predict)."),
    backend: ServeBackend = typer.Option(None, help="Runtime inside Triton (default: onnxruntime)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
    http_port: int = typer.Option(8000, min=0, help="HTTP port (0: any free port)."),
    grpc_port: int = typer.Option(8001, min=0, help="gRPC port (0: any free port)."),
    metrics_port: int = typer.Option(8002, min=0, help="Prometheus metrics port (0: any free port)."),
    max_batch: int = typer.Option(8, min=1, help="Largest batch a request (or a dynamic batch) may have."),
    max_queue_delay_us: int = typer.Option(100, min=0, help="How long the dynamic batcher waits to fill a batch."),
    dynamic_batching: bool = typer.Option(True, help="Let Triton merge concurrent requests into one batch."),
    threads: int = typer.Option(None, min=1, help="CPU threads for the runtime (default: its own)."),
    tritonserver: Path = typer.Option(None, help="A tritonserver binary to use (default: tritonserver on PATH, else "
                                      "the one in the nvidia-pytriton wheel)."),
) -> None:
    """Serve an artifact with a real Triton Inference Server on the CPU, until Ctrl-C."""
    from vgg_deploy.console import error_console
    from vgg_deploy.serve import ServeError, ServeOptions, TritonServer

    with user_errors():
        server = TritonServer(run, ServeOptions(
            artifact=artifact, backend=backend.value if backend else None, host=host, http_port=http_port,
            grpc_port=grpc_port, metrics_port=metrics_port, max_batch=max_batch, max_queue_delay_us=max_queue_delay_us,
            dynamic_batching=dynamic_batching, threads=threads,
            tritonserver=str(tritonserver) if tritonserver else None))
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        server.start()
        try:
            batching = f"dynamic batching up to {max_batch}" if dynamic_batching else f"no dynamic batching, max batch {max_batch}"
            error_console.print(
                f"serving model '{server.model_name}' ({server.artifact} on {server.runtime}, {batching}) with "
                f"tritonserver from the {server.install.source}\n"
                f"  HTTP  {server.http_url}\n  gRPC  {server.grpc_url}\n  metrics  {server.metrics_url}\n"
                f"  log  {server.log_path}\nCtrl-C stops it", markup=False, highlight=False)
            code = server.wait()
            raise ServeError(f"tritonserver exited by itself with code {code} (log: {server.log_path})")
        except KeyboardInterrupt:
            server.stop()
            error_console.print("stopped: tritonserver and its model processes have exited", markup=False)
        finally:
            server.stop()
