"""The benchmark step: every artifact's accuracy and latency beside the PyTorch FP32 baseline."""
