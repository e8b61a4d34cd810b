"""The `hpoq` CLI and the planning behind it. Never imports torch."""
