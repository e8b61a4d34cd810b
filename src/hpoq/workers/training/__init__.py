"""The built-in token-classification trainer: data encoding, model loading, metrics, checkpoints.

Modules that need torch import it at the top; the objective and the benchmark runner import
them lazily, so resolving a task does not load torch.
"""
