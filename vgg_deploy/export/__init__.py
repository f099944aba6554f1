"""The export step: RUN/ -> RUN/export/ (ONNX FP32, FP16, INT8 Q/DQ, TensorRT engines, manifest.json)."""
