"""`serve`: a real tritonserver (the nvidia-pytriton wheel's, installed by the dev extras) on loopback, queried
with tritonclient over HTTP and gRPC; bad requests, then a good one; nothing left running after it stops."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from vgg_deploy.errors import UnavailableError, VggDeployError
from vgg_deploy.predict import PredictOptions, predict
from vgg_deploy.runfolder import open_run
from vgg_deploy.serve import ServeOptions, TritonServer
from vgg_deploy.serve.server import (
    _failure_reason,
    group_members,
    remove_stale_workdirs,
)
from vgg_deploy.serve.tritonserver import find_tritonserver

MAX_BATCH = 4


@pytest.fixture(scope="module")
def server(exported_run):
    with TritonServer(exported_run, ServeOptions(artifact="onnx-int8", http_port=0, grpc_port=0, metrics_port=0,
                                                 max_batch=MAX_BATCH)) as running:
        yield running
    assert group_members(running.process.pid) == [] and running.workdir is None


@pytest.fixture(scope="module")
def test_images(exported_run):
    run = open_run(exported_run)
    items = run.split().absolute(run.split().test)[:MAX_BATCH]
    from vgg_deploy.imaging import load_rgb

    transform = run.preprocessing.eval_transform()
    import torch

    return [path for path, _ in items], torch.stack([transform(load_rgb(path)) for path, _ in items]).numpy()


def _http_logits(server, batch: np.ndarray, model: str | None = None, datatype: str = "FP32") -> np.ndarray:
    from tritonclient import http

    client = http.InferenceServerClient(server.http_url)
    tensor = http.InferInput("input", list(batch.shape), datatype)
    tensor.set_data_from_numpy(batch)
    return client.infer(model or server.model_name, [tensor]).as_numpy("logits")


def _grpc_logits(server, batch: np.ndarray) -> np.ndarray:
    from tritonclient import grpc

    client = grpc.InferenceServerClient(server.grpc_url)
    tensor = grpc.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    return client.infer(server.model_name, [tensor]).as_numpy("logits")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_http_and_grpc_answer_with_predicts_figures(server, exported_run, test_images):
    paths, batch = test_images
    over_http, over_grpc = _http_logits(server, batch), _grpc_logits(server, batch)
    np.testing.assert_array_equal(over_http, over_grpc)
    classes = len(open_run(exported_run).class_names)
    rows = predict(exported_run, paths, PredictOptions(artifact="onnx-int8", top_k=classes)).rows
    from_predict = np.zeros((len(rows), classes))
    for i, row in enumerate(rows):
        for top in row["top"]:
            from_predict[i, top["index"]] = top["probability"]
    np.testing.assert_allclose(_softmax(over_http), from_predict, atol=1e-6)
    # Labels travel with the model, as in export's repository: Triton's classification extension names them.
    from tritonclient import http

    client = http.InferenceServerClient(server.http_url)
    tensor = http.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    top = client.infer(server.model_name, [tensor], outputs=[http.InferRequestedOutput("logits", class_count=1)])
    names = [entry.decode().split(":")[-1] for entry in top.as_numpy("logits").ravel()]
    assert names == [row["top"][0]["label"] for row in rows]


def _disconnect_mid_request(server) -> None:
    """A client that sends half a request body, then goes away."""
    host, port = server.http_url.rsplit(":", 1)
    body = b'{"inputs":[{"name":"input","shape":[1,3,64,64],"datatype":"FP32","data":[' + b"0.0," * 1000
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST /v2/models/{server.model_name}/infer HTTP/1.1\r\nHost: {host}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body) * 20}\r\n\r\n".encode() + body)


def test_bad_requests_get_errors_and_the_server_keeps_serving(server, test_images):
    from tritonclient.utils import InferenceServerException

    _, batch = test_images
    expected = _http_logits(server, batch)
    image_size = batch.shape[-1]
    bad = {
        "nan": (np.full_like(batch[:1], np.nan), None, "FP32", "NaN"),
        "shape": (np.zeros((1, 3, image_size - 1, image_size), np.float32), None, "FP32", "unexpected shape"),
        "dtype": (batch[:1].astype(np.float16), None, "FP16", "data-type"),
        "batch": (np.repeat(batch[:1], MAX_BATCH + 1, axis=0), None, "FP32", f"batch-size must be <= {MAX_BATCH}"),
        "model": (batch[:1], "no_such_model", "FP32", "unknown model"),
    }
    for what, (inputs, model, datatype, message) in bad.items():
        with pytest.raises(InferenceServerException, match=re.escape(message)):
            _http_logits(server, inputs, model=model, datatype=datatype)
        np.testing.assert_array_equal(_http_logits(server, batch), expected, err_msg=f"after the bad {what} request")
    _disconnect_mid_request(server)
    np.testing.assert_array_equal(_grpc_logits(server, batch), expected)
    host = server.http_url
    for endpoint in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{server.model_name}/ready"):
        with urllib.request.urlopen(f"http://{host}{endpoint}", timeout=5) as response:
            assert response.status == 200
    metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    served = re.search(rf'nv_inference_request_success{{model="{server.model_name}",.*}} (\d+)', metrics)
    assert served and int(served.group(1)) >= len(bad) + 2  # this test's good requests, at least


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def test_ctrl_c_stops_the_cli_and_everything_it_started(exported_run, test_images):
    """The CLI, with OpenVINO inside Triton this time: FP32 logits as onnxruntime's, then Ctrl-C."""
    command = [sys.executable, "-m", "vgg_deploy", "serve", str(exported_run), "--artifact", "onnx",
               "--backend", "openvino", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
               "--no-dynamic-batching"]
    others = set(exported_run.glob(".serve-*"))  # the module's own server, if it is up
    # As from a terminal: SIGINT's default action, even where this suite runs as a background job (which
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler).
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        text = "".join(lines)
        assert "no dynamic batching" in text, text
        http = re.search(r"HTTP\s+(\S+)", text).group(1)
        assert urllib.request.urlopen(f"http://{http}/v2/health/ready", timeout=5).status == 200
        import onnxruntime as ort
        import tritonclient.http as triton_http

        _, batch = test_images
        tensor = triton_http.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        served = triton_http.InferenceServerClient(http).infer("vgg16_onnx", [tensor]).as_numpy("logits")
        expected = ort.InferenceSession(str(exported_run / "export" / "model.onnx")).run(None, {"input": batch})[0]
        np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
        (triton,) = _children(process.pid)
        (workdir,) = set(exported_run.glob(".serve-*")) - others
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, rest
    assert "stopped" in rest and "Traceback" not in rest
    assert group_members(triton) == [] and not workdir.exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{http}/v2/health/live", timeout=2)


def test_a_model_that_fails_to_load_is_named_in_one_line():
    log = ('I1129 model_lifecycle.cc:473] "loading: m:1"\n'
           'E1129 19:19:40.481130 13373 model_lifecycle.cc:642] "failed to load \'vgg16_onnx\' version 1: Internal: '
           'ModuleNotFoundError: No module named \'onnxruntime\'\\n\\nAt:\\n  model.py(3)"\n'
           'error: creating server: Internal - failed to load all models\n')
    assert _failure_reason(log) == ("failed to load 'vgg16_onnx' version 1: Internal: ModuleNotFoundError: "
                                    "No module named 'onnxruntime'")
    assert _failure_reason('E1129 main.cc:257] "failed to start HTTP service: Socket in use "') == \
        "failed to start HTTP service: Socket in use"


def test_refusals(exported_run, tmp_path):
    others = set(exported_run.glob(".serve-*"))
    with pytest.raises(UnavailableError, match="not an executable"):
        find_tritonserver(tmp_path / "tritonserver")
    with pytest.raises(VggDeployError, match="not pytorch"):
        TritonServer(exported_run, ServeOptions(artifact="pytorch")).start()
    with pytest.raises(VggDeployError, match="--backend"):
        TritonServer(exported_run, ServeOptions(backend="tensorrt")).start()
    assert set(exported_run.glob(".serve-*")) == others


def test_the_server_is_a_real_tritonserver():
    install = find_tritonserver()
    assert install.binary.name == "tritonserver" and os.access(install.binary, os.X_OK)
    if install.source == "nvidia-pytriton wheel":
        assert install.stub.parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_a_killed_serve_takes_its_server_with_it(exported_run):
    """SIGKILL gives serve no chance to stop Triton: the kernel's parent-death signal does."""
    command = [sys.executable, "-m", "vgg_deploy", "serve", str(exported_run), "--artifact", "onnx",
               "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    others = set(exported_run.glob(".serve-*"))
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if "Ctrl-C stops it" in line:
                break
        (triton,) = _children(process.pid)
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while group_members(triton) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert group_members(triton) == []
    finally:
        if process.poll() is None:
            process.kill()
    # Its work folder outlived it (only an orderly stop removes it); the next serve of the run removes it.
    (left,) = set(exported_run.glob(".serve-*")) - others
    assert remove_stale_workdirs(exported_run) == [left] and set(exported_run.glob(".serve-*")) == others


def test_a_running_serves_work_folder_is_not_stale(tmp_path):
    alive, unowned = tmp_path / ".serve-alive", tmp_path / ".serve-starting"
    alive.mkdir()
    (alive / "serve.pid").write_text(str(os.getpid()))
    unowned.mkdir()
    assert remove_stale_workdirs(tmp_path) == [] and alive.is_dir() and unowned.is_dir()
