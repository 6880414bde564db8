"""One error hierarchy for raymeta.

Every error raymeta raises on purpose is a :class:`RaymetaError`. Each subclass also
inherits the builtin exception a caller would naturally catch (``ValueError`` for bad
input, ``RuntimeError`` for a failed computation, ``OSError`` for storage problems), so
``except ValueError`` keeps working for code that does not know raymeta.

Messages follow one rule: say what was expected, what arrived, and how to fix it.

Example:
    >>> from raymeta.errors import ConfigError
    >>> raise ConfigError("unknown key 'lr_meta'; expected one of ['meta_lr', ...]")
    Traceback (most recent call last):
    ...
    raymeta.errors.ConfigError: unknown key 'lr_meta'; expected one of ['meta_lr', ...]
"""

from __future__ import annotations

__all__ = [
    "ClusterUnreachableError",
    "ConfigError",
    "EpisodeError",
    "FitError",
    "InvalidNameError",
    "MetaDataError",
    "RankDivergenceError",
    "RaymetaError",
    "SchemaMismatchError",
    "SearchSpaceError",
    "SearcherSetupError",
    "SelectionError",
    "StoreError",
    "TrainingSetupError",
    "UnknownTableError",
    "UnknownTaskFamilyError",
]


class RaymetaError(Exception):
    """Base class of every error raymeta raises on purpose."""


class ConfigError(RaymetaError, ValueError):
    """A job configuration is invalid; the message lists every problem found."""


class SearchSpaceError(RaymetaError, ValueError):
    """A Tune search space holds a domain raymeta cannot model."""


class MetaDataError(RaymetaError, ValueError):
    """Meta-data (earlier tasks' observations) are malformed; names the task."""


class FitError(RaymetaError, RuntimeError):
    """A model fit failed on every fallback."""


class TrainingSetupError(RaymetaError, ValueError):
    """A meta-learning problem is set up wrongly (optimizer, modules, batches)."""


class StoreError(RaymetaError, OSError):
    """The results store cannot be read or written (permissions, missing root)."""


class UnknownTableError(RaymetaError, KeyError):
    """A results-store table name is not declared and no schema was given."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class SchemaMismatchError(RaymetaError, TypeError):
    """Data do not match a table's schema (missing column or changed type)."""


class InvalidNameError(RaymetaError, ValueError):
    """A user-supplied name would be unsafe as a path component."""


class EpisodeError(RaymetaError, ValueError):
    """An episode cannot be drawn as asked (too few classes, shots over class size)."""


class SelectionError(RaymetaError, ValueError):
    """A task-selection rule is configured wrongly (e.g. ranked range m >= k)."""


class UnknownTaskFamilyError(RaymetaError, KeyError):
    """A task-family or head name is not registered; the message lists valid names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class RankDivergenceError(RaymetaError, RuntimeError):
    """Replicated state (parameters, meta-parameters) differs between ranks."""


class SearcherSetupError(RaymetaError, ValueError):
    """A searcher lacks its metric, mode or space, or cannot restore a checkpoint."""


class ClusterUnreachableError(RaymetaError, ConnectionError):
    """The Ray cluster named by RAY_ADDRESS does not answer."""


class TrainingFailedError(RaymetaError, RuntimeError):
    """A distributed training run failed after using up its failure budget.

    The message names the newest checkpoint (the restore path) and how to resume.
    """


class TuningIncompleteError(RaymetaError, RuntimeError):
    """A Tune experiment finished with fewer trials than it was asked to run."""
