"""Config schemas, YAML loading, settings from the environment and the run mode."""
