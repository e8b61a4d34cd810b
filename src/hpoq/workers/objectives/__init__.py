"""Objectives a worker can run (`objective.function` in the HPO config).

- `token_classification:objective`: the built-in NER fine-tuning (torch, transformers).
- `cheap:objective`: a torch-free stand-in for orchestration tests.
"""
