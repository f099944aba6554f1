"""TensorRT logic tested without TensorRT: profile shapes, sidecars, compatibility, and the plan of
builder calls (recorded by a stand-in that has only the current API, so a removed call fails)."""

from __future__ import annotations

import types

import pytest

from vgg_deploy.artifacts import tensorrt_meta as meta
from vgg_deploy.errors import ExportError, UnavailableError
from vgg_deploy.export.tensorrt_build import build_engine

ENV10 = meta.TensorRTEnvironment("10.13.0", "NVIDIA H200", "9.0")
ENV11 = meta.TensorRTEnvironment("11.0.1", "NVIDIA H200", "9.0")


def test_profile_shapes_and_validation():
    assert meta.BatchProfile(1, 8, 32).shapes(224) == ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    for bad in ((0, 1, 2), (4, 2, 8), (1, 8, 4)):
        with pytest.raises(ExportError, match="batch profile"):
            meta.BatchProfile(*bad)


def _sidecar(env=ENV10):
    return meta.make_sidecar(env=env, precision="int8", profile=meta.BatchProfile(), source_onnx="model.int8.onnx",
                             source_sha256="ab" * 32, input_name="input", output_name="logits", image_size=224,
                             strongly_typed=True, workspace_bytes=1 << 30)


def test_sidecar_round_trip_and_compatibility(tmp_path):
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"engine")
    meta.write_sidecar(engine, _sidecar())
    assert meta.check_compatible(engine, ENV10)["source_onnx_sha256"] == "ab" * 32
    with pytest.raises(UnavailableError) as err:
        meta.check_compatible(engine, meta.TensorRTEnvironment("10.14.1", "NVIDIA L4", "8.9"))
    text = str(err.value)
    assert "TensorRT 10.13.0 vs 10.14.1 here" in text and "NVIDIA L4" in text and "rebuild" in text


def test_missing_sidecar_is_refused(tmp_path):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"")
    with pytest.raises(UnavailableError, match="has no x.engine.json"):
        meta.check_compatible(engine, ENV10)


def test_strongly_typed_flag_on_10_and_implicit_on_11():
    trt = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1))
    assert meta.network_flags(trt, 10) == 1 << 1
    assert meta.network_flags(trt, 11) == 0


def test_timing_cache_name_is_per_version_and_gpu():
    assert meta.timing_cache_name(ENV10) == "timing-trt10.13.0-nvidia-h200-sm90.cache"


class _Recorder:
    """Only the TensorRT 10/11 calls design.md lists exist here; anything else raises AttributeError."""

    def __init__(self, calls, name):
        self._calls, self._name = calls, name

    def _record(self, method, *args):
        self._calls.append((f"{self._name}.{method}", args))


def fake_tensorrt(calls: list, *, parse_ok=True, build_ok=True):
    class Logger:
        WARNING = "warning"

        def __init__(self, level):
            calls.append(("Logger", (level,)))

    class Profile(_Recorder):
        def set_shape(self, name, mn, opt, mx):
            self._record("set_shape", name, mn, opt, mx)

    class TimingCache(_Recorder):
        def serialize(self):
            return b"timing"

    class Config(_Recorder):
        def set_memory_pool_limit(self, pool, size):
            self._record("set_memory_pool_limit", pool, size)

        def add_optimization_profile(self, profile):
            self._record("add_optimization_profile")

        def create_timing_cache(self, blob):
            self._record("create_timing_cache", blob)
            return TimingCache(calls, "cache")

        def set_timing_cache(self, cache, ignore_mismatch):
            self._record("set_timing_cache", ignore_mismatch)

        def get_timing_cache(self):
            return TimingCache(calls, "cache")

    class Builder(_Recorder):
        def __init__(self, logger):
            super().__init__(calls, "builder")

        def create_network(self, flags):
            self._record("create_network", flags)
            return object()

        def create_builder_config(self):
            return Config(calls, "config")

        def create_optimization_profile(self):
            return Profile(calls, "profile")

        def build_serialized_network(self, network, config):
            self._record("build_serialized_network")
            return b"serialized-engine" if build_ok else None

    class OnnxParser(_Recorder):
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            super().__init__(calls, "parser")

        def parse_from_file(self, path):
            self._record("parse_from_file", path)
            return parse_ok

        def get_error(self, index):
            return "Unsupported operator Foo"

    return types.SimpleNamespace(
        Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
    )


def _build(tmp_path, trt, env=ENV10):
    onnx_path = tmp_path / "model.int8.onnx"
    onnx_path.write_bytes(b"onnx")
    engine = tmp_path / "model.int8.engine"
    build_engine(onnx_path, engine, env=env, input_name="input", image_size=64, profile=meta.BatchProfile(1, 4, 16),
                 workspace_bytes=123, timing_cache=tmp_path / "timing.cache", trt=trt)
    return engine


def test_builder_plan_uses_only_current_calls(tmp_path):
    calls: list = []
    engine = _build(tmp_path, fake_tensorrt(calls))
    names = [name for name, _ in calls]
    assert names == [
        "Logger", "builder.create_network", "parser.parse_from_file", "config.set_memory_pool_limit",
        "profile.set_shape", "config.add_optimization_profile", "config.create_timing_cache",
        "config.set_timing_cache", "builder.build_serialized_network",
    ]
    args = dict(calls)
    assert args["builder.create_network"] == (2,)  # 1 << STRONGLY_TYPED on TensorRT 10
    assert args["profile.set_shape"] == ("input", (1, 3, 64, 64), (4, 3, 64, 64), (16, 3, 64, 64))
    assert args["config.set_memory_pool_limit"] == ("workspace", 123)
    assert engine.read_bytes() == b"serialized-engine"
    assert (tmp_path / "timing.cache").read_bytes() == b"timing"
    # A second build feeds the saved timing cache back in.
    calls.clear()
    _build(tmp_path, fake_tensorrt(calls), env=ENV11)
    assert dict(calls)["config.create_timing_cache"] == (b"timing",)
    assert dict(calls)["builder.create_network"] == (0,)


def test_parse_and_build_failures_are_export_errors_and_leave_no_engine(tmp_path):
    with pytest.raises(ExportError, match="Unsupported operator Foo"):
        _build(tmp_path, fake_tensorrt([], parse_ok=False))
    with pytest.raises(ExportError, match="failed to build"):
        _build(tmp_path, fake_tensorrt([], build_ok=False))
    assert not (tmp_path / "model.int8.engine").exists()


def test_detect_environment_without_tensorrt_says_what_is_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    with pytest.raises(UnavailableError, match="TensorRT is not installed"):
        meta.detect_environment()


def test_runner_module_imports_without_tensorrt():
    """In a process where `import tensorrt` fails (whether or not TensorRT is installed): the runner module
    imports and a runner is made without touching TensorRT; only activating it needs TensorRT."""
    import subprocess
    import sys

    code = "\n".join([
        "import sys",
        "sys.modules['tensorrt'] = None  # import tensorrt now raises ImportError",
        "from vgg_deploy.runners.spec import RunnerSpec, build_runner",
        "runner = build_runner(RunnerSpec('tensorrt', 'trt-int8', 'x.engine', precision='int8', device='cuda'))",
        "assert runner.backend == 'tensorrt' and runner.precision == 'int8'",
        "try:",
        "    runner.activate()",
        "except ImportError as err:",
        "    print('needs', err.name)",
    ])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "needs tensorrt"


def test_batch_profile_from_the_engine_checks_and_splits_batches():
    """What the TensorRT runner does with the engine's profile, without TensorRT: refuse a batch outside it
    with the fix named, and split a large evaluation batch into pieces that fit."""
    profile = meta.BatchProfile.from_engine_shapes([(2, 3, 32, 32), (8, 3, 32, 32), (16, 3, 32, 32)])
    assert profile == meta.BatchProfile(2, 8, 16)
    profile.check((16, 3, 32, 32), "m.engine")
    for bad in (1, 17):
        with pytest.raises(UnavailableError, match=f"m.engine runs batches of 2 to 16 images .*not {bad}"):
            profile.check((bad, 3, 32, 32), "m.engine")
    for count in (2, 16, 17, 33, 40):
        parts = profile.chunks(count)
        sizes = [p.stop - p.start for p in parts]
        assert sum(sizes) == count and all(2 <= s <= 16 for s in sizes), (count, sizes)
        assert [p.start for p in parts] == [sum(sizes[:i]) for i in range(len(sizes))]
    assert [p.stop - p.start for p in profile.chunks(17)] == [15, 2]


def test_engines_are_checked_against_pytorch_at_export(tmp_path, monkeypatch):
    """The engine check with a stand-in runner (no TensorRT here): FP16 within FP16's tolerance or the file
    goes; INT8 figures recorded, and the file refused beyond --max-accuracy-drop."""
    import numpy as np

    from vgg_deploy.export import builders
    from vgg_deploy.export.options import ExportOptions
    from vgg_deploy.runners import tensorrt_runner

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((40, 4)).astype(np.float32) * 5
    labels = reference.argmax(1)
    served = {}

    class StandIn(tensorrt_runner.TensorRTRunner):
        def _activate(self):
            pass

        def _deactivate(self):
            pass

        def infer(self, batch):
            return served["logits"][batch[:, 0].astype(int)]

    monkeypatch.setattr(tensorrt_runner, "TensorRTRunner", StandIn)
    batches = [np.arange(i, i + 8, dtype=np.float32)[:, None].repeat(3, 1) for i in range(0, 40, 8)]
    engine = tmp_path / "model.fp16.engine"

    def check(name, logits, **options):
        engine.write_bytes(b"engine")
        served["logits"] = logits
        ctx = types.SimpleNamespace(test_batches=batches, reference=reference, test_labels=labels,
                                    options=ExportOptions(**options))
        return builders._engine_parity(ctx, name, engine)

    figures = check("trt-fp16", reference + 1e-3)
    assert figures["top1_agreement"] == 1.0 and engine.is_file()
    with pytest.raises(ExportError, match="trt-fp16 is beyond parity tolerance"):
        check("trt-fp16", reference[::-1].copy())
    assert not engine.is_file()
    flipped = reference.copy()
    flipped[:4] = -flipped[:4]  # 4 of 40 predictions change: 10 points lost
    assert check("trt-int8", flipped)["drop_points"] == pytest.approx(10.0)
    with pytest.raises(ExportError, match="trt-int8 loses 10.00 points"):
        check("trt-int8", flipped, max_accuracy_drop=5.0)
    assert not engine.is_file()


def test_engine_runner_infer_fits_any_batch_to_the_profile():
    """TensorRTRunner.infer itself (its engine calls stood in): a batch above the profile is split, one
    below it padded, and every call the engine sees lies inside the profile."""
    import numpy as np

    from vgg_deploy.runners.tensorrt_runner import TensorRTRunner

    seen = []

    class StandIn(TensorRTRunner):
        def _activate(self):
            self.profile = meta.BatchProfile(4, 8, 16)

        def _deactivate(self):
            pass

        def prepare(self, batch):
            self.profile.check(batch.shape, "m.engine")
            seen.append(len(batch))
            return batch

        def run(self, prepared):
            return prepared.reshape(len(prepared), -1).sum(axis=1, keepdims=True)

        def to_numpy(self, output):
            return np.asarray(output)

    rng = np.random.default_rng(0)
    with StandIn("m.engine") as runner:
        for count in (3, 16, 37):
            batch = rng.standard_normal((count, 3, 2, 2)).astype(np.float32)
            np.testing.assert_allclose(runner.infer(batch), batch.reshape(count, -1).sum(axis=1, keepdims=True),
                                       rtol=1e-6)
    assert seen == [4, 16, 16, 16, 5] and all(4 <= n <= 16 for n in seen)


def test_engine_runner_sets_each_shape_once_and_reuses_its_output():
    """TensorRTRunner.run and its per-shape setup against a stand-in execution context (CPU tensors for
    device buffers): set_input_shape only when the shape changes and its answer checked, one output buffer
    per shape, the runner's own stream handed to execute_async_v3."""
    import contextlib

    import torch

    from vgg_deploy.runners.tensorrt_runner import TensorRTRunner

    class Context:
        def __init__(self):
            self.calls, self.shape, self.accept, self.execute_ok = [], None, True, True

        def set_input_shape(self, name, shape):
            self.calls.append(("set_input_shape", shape))
            self.shape = shape
            return self.accept

        def get_tensor_shape(self, name):
            return (self.shape[0], 3)

        def set_tensor_address(self, name, address):
            self.calls.append(("set_tensor_address", name))

        def execute_async_v3(self, stream):
            self.calls.append(("execute_async_v3", stream))
            return self.execute_ok

    class StandIn(TensorRTRunner):
        def _activate(self):
            self.torch = types.SimpleNamespace(
                empty=lambda shape, dtype, device: torch.empty(shape, dtype=dtype),
                cuda=types.SimpleNamespace(stream=lambda stream: contextlib.nullcontext()))
            self.context, self.stream = Context(), types.SimpleNamespace(cuda_stream=7, synchronize=lambda: None)
            self.profile, self.input_name, self.output_name = meta.BatchProfile(1, 4, 8), "input", "logits"
            self.output_dtype, self.input_shape, self.outputs = torch.float32, None, {}

        def _deactivate(self):
            pass

    with StandIn("m.engine") as runner:
        four, two = torch.zeros(4, 3, 8, 8), torch.zeros(2, 3, 8, 8)
        first = runner.run(four)
        assert runner.run(four) is first and first.shape == (4, 3)
        assert runner.run(two).shape == (2, 3)
        assert runner.run(four) is first  # the shape is set again, the buffer is not reallocated
        shapes = [args[0] for name, *args in runner.context.calls if name == "set_input_shape"]
        assert shapes == [(4, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8)]
        assert {args[0] for name, *args in runner.context.calls if name == "execute_async_v3"} == {7}
        runner.context.accept = False
        with pytest.raises(RuntimeError, match=r"refused input shape \(3, 3, 8, 8\) for m.engine"):
            runner.run(torch.zeros(3, 3, 8, 8))
        runner.context.accept, runner.context.execute_ok = True, False
        with pytest.raises(RuntimeError, match="execution failed for m.engine"):
            runner.run(four)


def test_the_int8_engine_source_runs_its_float_parts_in_fp16(exported_run, tmp_path):
    """The graph fed to TensorRT for trt-int8: INT8 weights and Q/DQ in front of the quantized ops, every other
    float part FP16 (scales, biases, activations between the INT8 ops), FP32 only at the graph's edges and
    for a node FP16 would overflow; onnxruntime runs it and it still agrees with FP32."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from calibration.quantize import node_names
    from vgg_deploy.export.int8 import write_tensorrt_qdq
    from vgg_deploy.artifacts.manifest import read_manifest
    from vgg_deploy.parity import compare

    export_dir = exported_run / "export"
    entry = next(e for e in read_manifest(export_dir)["artifacts"] if e["name"] == "onnx-int8")
    fp32 = export_dir / "model.onnx"
    overflowing = node_names(fp32)[0]  # as if conv1_1 overflowed FP16
    out, info = write_tensorrt_qdq(fp32, tmp_path / "trt-source.onnx", int8_entry=entry,
                                   cache_dir=export_dir / "calibration", keep_fp32_nodes=[overflowing])
    assert info["float_parts"] == "fp16" and info["kept_fp32_nodes"] == [overflowing]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trt-source.onnx"]  # no intermediate left behind
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    graph = proto.graph
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 19
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types |= {i.name: i.data_type for i in graph.initializer}
    FP16, FP32, INT8 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT, onnx.TensorProto.INT8
    assert [types[i.name] for i in graph.input] == [FP32] and [types[o.name] for o in graph.output] == [FP32]
    compute = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    for node in compute:
        wanted = FP32 if node.name == overflowing else FP16
        assert {types[node.input[0]], types[node.input[1]], types[node.output[0]]} == {wanted}, node.name
    # Still INT8 (only kept layers are not): the overflowing node's dequantizers produce FP32, every other FP16.
    quantized_weights = [i for i in graph.initializer if i.data_type == INT8 and len(i.dims) > 1]
    assert len(quantized_weights) == len(compute) - len(entry.get("kept_out_of_int8", []))
    dequantizers = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    into_overflowing = {n.name for n in dequantizers if n.output[0] in compute[0].input}
    assert len(into_overflowing) == 2  # its input and its weights
    for node in dequantizers:
        wanted = FP32 if node.name in into_overflowing else FP16
        assert types[node.input[1]] == wanted and types[node.output[0]] == wanted, node.name
    # No FP32 initializer but the overflowing node's own: its dequantizers' scales and its bias (which reaches
    # it through a Cast the converter adds).
    float32_initializers = {i.name for i in graph.initializer if i.data_type == FP32}
    cast_sources = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast"}
    own = ({n.input[1] for n in dequantizers if n.name in into_overflowing}
           | {cast_sources.get(name, name) for name in compute[0].input[2:]})
    assert float32_initializers and float32_initializers <= own
    from vgg_deploy.batches import load_batches
    from vgg_deploy.runfolder import open_run

    run = open_run(exported_run)
    batches, _ = load_batches(run.split().absolute(run.split().test)[:16], run.preprocessing, batch_size=16)
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": batches[0]})[0]
    reference = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"input": batches[0]})[0]
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    parity = compare(reference, logits)
    assert parity.top1_agreement >= 0.8 and parity.max_abs_logit_diff < 0.25 * parity.reference_logit_range


def _fake_engine_trt():
    data_type = types.SimpleNamespace(FLOAT="float", HALF="half", INT8="int8", INT32="int32", BOOL="bool")
    io_mode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    return types.SimpleNamespace(DataType=data_type, TensorIOMode=io_mode)


class _FakeEngine:
    num_io_tensors = 2

    def __init__(self, input_dtype):
        self.dtypes = {"input": input_dtype, "logits": "float"}

    def get_tensor_name(self, index):
        return ("input", "logits")[index]

    def get_tensor_mode(self, name):
        return "in" if name == "input" else "out"

    def get_tensor_dtype(self, name):
        return self.dtypes[name]

    def get_tensor_profile_shape(self, name, profile):
        return [(1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8)]


class _FakeStream:
    def __init__(self):
        self.synchronized = 0

    def synchronize(self):
        self.synchronized += 1


def _engine_runner(input_dtype):
    import torch

    from vgg_deploy.runners.tensorrt_runner import TensorRTRunner

    class StandIn(TensorRTRunner):
        def _activate(self):
            self.torch, self.device, self.stream = torch, "cpu", _FakeStream()
            self._bind_engine(_fake_engine_trt(), _FakeEngine(input_dtype))
            self.context = object()

    return StandIn("m.engine")


def test_the_engine_runner_feeds_the_input_dtype_the_engine_declares():
    import numpy as np
    import torch

    batch = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with _engine_runner("half") as runner:
        assert runner.input_dtype == torch.float16 and runner.output_dtype == torch.float32
        prepared = runner.prepare(batch)
        assert prepared.dtype == torch.float16
        assert torch.allclose(prepared.float(), torch.from_numpy(batch), atol=1e-2)
    with _engine_runner("float") as runner:
        assert runner.prepare(batch).dtype == torch.float32


def test_the_engine_runner_syncs_its_stream_before_teardown():
    runner = _engine_runner("float")
    runner.activate()
    stream = runner.stream
    runner.deactivate()
    assert stream.synchronized == 1 and runner.stream is None and runner.context is None


def test_one_tensorrt_logger_per_process(tmp_path):
    from vgg_deploy.runners.tensorrt_runner import tensorrt_logger

    calls: list = []
    trt = fake_tensorrt(calls)
    assert tensorrt_logger(trt) is tensorrt_logger(trt)
    _build(tmp_path, trt)
    _build(tmp_path, trt)
    assert [name for name, _ in calls].count("Logger") == 1  # the runner and every build share it


def test_an_unreadable_timing_cache_is_replaced_with_a_warning(tmp_path, capsys):
    calls: list = []
    trt = fake_tensorrt(calls)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"garbage from another TensorRT")
    real_config = trt.Builder(None).create_builder_config().__class__

    class RefusingConfig(real_config):
        def create_timing_cache(self, blob):
            return None if blob else super().create_timing_cache(blob)

    class Builder(trt.Builder):
        def create_builder_config(self):
            return RefusingConfig(calls, "config")

    trt.Builder = Builder
    _build(tmp_path, trt)
    assert "could not read the timing cache" in capsys.readouterr().out
    assert [args for name, args in calls if name == "config.create_timing_cache"][-1] == (b"",)
    assert cache.read_bytes() == b"timing"  # the build's own cache replaced the bad one
