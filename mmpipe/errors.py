"""The domain exceptions: every message says what went wrong and what to do about it."""


class MmpipeError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero, never a traceback."""


class ConfigError(MmpipeError):
    """The configuration file, an MMPIPE_* variable or a flag has an unusable value."""


class SourceError(MmpipeError):
    """The raw source as a whole is unusable (missing, unknown format, missing column)."""


class DataDirError(MmpipeError):
    """The data dir is missing, unreadable, or holds something mmpipe did not write."""


class ContractFileError(MmpipeError):
    """A suite file in data_contracts/ is unreadable, malformed, or has an expectation GX rejects."""


class ContractViolation(MmpipeError):
    """A dataset version failed a critical expectation; `report` holds the whole validation."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class ServingError(MmpipeError):
    """The serving export is missing, or an input cannot be served."""


class RunStoreError(MmpipeError):
    """A run that is asked for does not exist or cannot be read."""


class EvaluationError(MmpipeError):
    """The run or the data cannot be evaluated (unknown run, unfinished run, empty split, ...)."""


class TrainingError(MmpipeError):
    """Training cannot start or continue (dataset not validated, unknown run to resume, ...)."""


class StorageError(MmpipeError):
    """An object store (S3, GCS, Azure) cannot be reached, lacks an object, or refuses access."""


class TrackingError(MmpipeError):
    """The tracking server (MLflow) cannot be reached or refused a run; a run is complete without it."""


class ScoringError(MmpipeError):
    """New data cannot be scored with the run asked for (unfinished run, no champion, an unusable output dir)."""


class TuningError(MmpipeError):
    """A search cannot start or go on (no validation split, no trial finished, a damaged study)."""
