"""The one error tree of hpoq. The CLI maps each branch to an exit code."""


class HpoqError(Exception):
    """Root of every error hpoq raises on purpose."""


class InputError(HpoqError):
    """Raised for bad user input (config files, arguments, names); the CLI exits 2."""


class ConfigError(InputError):
    """Raised when a config file is missing, unparsable or fails validation."""


class SettingsError(InputError):
    """Raised when an environment variable holds a value hpoq cannot use; exit 2."""


class UnsafeNameError(InputError):
    """Raised when a name or path component could escape its directory."""


class ServiceError(HpoqError):
    """Raised when a service (Redis, MLflow, Optuna storage) cannot be reached; exit 1."""
