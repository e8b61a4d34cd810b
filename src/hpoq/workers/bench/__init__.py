"""Inference benchmarks of trial checkpoints.

- `runner.run_inference_benchmark`: the real measurement (torch, transformers).
- `cheap.run_inference_benchmark`: a torch-free stand-in with the same signature and result.
"""
