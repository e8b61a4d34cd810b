"""`hpoq report`: one self-contained HTML page of an experiment's searches and benchmarks.

- data.py: what the page shows, read through the same code as `hpoq retrieve` (retrieval,
  benchmark keys and results, recorded failures) plus the Optuna studies;
- figures.py: the charts (Optuna's visualisation module per backbone; plotly for the
  benchmarks);
- page.py: the HTML (every user-provided string escaped; plotly.js inlined once);
- build.py: writing the file and logging it to MLflow.
"""
