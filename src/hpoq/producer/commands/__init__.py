"""One module per CLI command group; each is a thin layer over an importable function."""
