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


class NothingToDo(HpoqError):
    """Raised when a stage finds nothing to work on (no best trial to train); exit 1."""


class JobFailed(HpoqError):
    """Raised by a worker task for a job that failed for good, once the failure is recorded
    (MLflow, Redis): Celery and Flower show the task as FAILURE with this text."""


class JobRejected(JobFailed):
    """Raised by a worker task for a malformed job payload, which is never executed."""


class ContentError(HpoqError):
    """Raised when published files (data, model, checkpoint) cannot be found, downloaded
    or verified against their content hash; exit 1."""


class ContentMismatch(ContentError):
    """Raised when downloaded files do not match their manifest, or the manifest its digest."""
