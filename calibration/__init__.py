"""Post-training INT8 calibration for any ONNX classifier: batches in -> ranges -> explicit Q/DQ model out.

Knows nothing of VGG. onnxruntime's quantization tools do the work (calibrators, the QDQ quantizer,
the activation-matching debugger); this package adds the TensorRT-compatible settings, a keyed
range cache, and the layer-sensitivity fallback.
"""

from calibration.ranges import CalibrationKey, RangeCache, collect_ranges, hash_batches, write_tensorrt_table
from calibration.reader import BatchReader
from calibration.quantize import QUANTIZED_OP_TYPES, quantize_qdq, qdq_properties
from calibration.sensitivity import rank_sensitive_nodes

__all__ = [
    "BatchReader",
    "CalibrationKey",
    "QUANTIZED_OP_TYPES",
    "RangeCache",
    "collect_ranges",
    "hash_batches",
    "qdq_properties",
    "quantize_qdq",
    "rank_sensitive_nodes",
    "write_tensorrt_table",
]
