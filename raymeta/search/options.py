"""ScaMLGPSearch's model and fitting options: one validated, frozen dataclass.

The searcher, the ``tune_scamlgp`` job config and the benchmark harness all build
their options through :class:`SearcherOptions`, so a bad value (an unknown
acquisition, ``raw_samples=0``, ``beta=nan``) is rejected once, at construction,
with the allowed range in the message, instead of silently turning every
suggestion into a random fallback.

The config loader uses it to validate a TOML file before anything starts.

Example:
    >>> SearcherOptions(acquisition="ei").acquisition
    'ei'
    >>> SearcherOptions(raw_samples=0)
    Traceback (most recent call last):
    ...
    raymeta.errors.SearcherSetupError: ScaMLGPSearch options: raw_samples: ...
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

from raymeta.errors import SearcherSetupError
from raymeta.gp.kernel import KERNELS
from raymeta.gp.propose import ACQUISITIONS, MAX_FIT_TASKS

__all__ = ["SearcherOptions", "problems"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearcherOptions:
    """Options of :class:`~raymeta.search.searcher.ScaMLGPSearch`.

    Attributes:
        acquisition: ``"ucb"``, ``"ei"`` or ``"logei"``.
        beta: UCB exploration parameter, finite and > 0 (9 = minimise mu - 3 sigma).
        restarts: Prior-drawn restarts of each target-model fit (>= 0).
        num_restarts: Restarts of the acquisition optimiser (>= 1).
        raw_samples: Sobol candidates screened for the acquisition starts
            (>= num_restarts).
        meta_restarts: Prior-drawn restarts of each meta-task GP fit (>= 0).
        max_fit_tasks: With more meta-tasks than this, each target fit uses the
            ones with the highest marginal-likelihood gain (>= 1; default 128;
            exact when M <= max_fit_tasks; see :mod:`raymeta.gp.screen`).
        min_task_points: Meta-tasks with fewer observations are left out, with one
            warning naming them (>= 1; default 3). A GP fitted on one or two points
            has no information about its lengthscales, and its posterior variance
            away from those points drags the warm start towards the edges of the
            space (measured: 20 one-row tasks moved the first suggestion from the
            meta-data optimum 0.70 to the worst point 1.0; two-row tasks to 0.70-0.77;
            three-row tasks left it at 0.66-0.67).
        num_fit_workers: Ray workers for the meta-task GP fits (0 = in-process).
        fit_num_cpus: CPUs each fit worker requests, finite and >= 0 (0 never
            starves trials).
        fit_min_tasks_per_worker: Fewer meta-tasks than this are fitted in the
            driver; each Ray fitter gets at least this many (>= 1).
        fit_max_retries: Ray re-runs of a fitter whose worker died (>= 0).
        num_threads: Torch threads for the model code run in the driver (>= 1).
        kernel: ``"rbf"`` or ``"matern52"``: the kernel of the meta-task GPs and
            of the target's residual GP.
    """

    acquisition: str = "ucb"
    beta: float = 9.0
    restarts: int = 5
    num_restarts: int = 4
    raw_samples: int = 1024
    meta_restarts: int = 5
    max_fit_tasks: int = MAX_FIT_TASKS
    min_task_points: int = 3
    num_fit_workers: int = 1
    fit_num_cpus: float = 0.0
    fit_min_tasks_per_worker: int = 32
    fit_max_retries: int = 2
    num_threads: int = 1
    kernel: str = "rbf"

    def __post_init__(self) -> None:
        """Reject every bad value at once (one error lists them all)."""
        found = problems(dataclasses.asdict(self))
        if found:
            raise SearcherSetupError("ScaMLGPSearch options: " + "; ".join(found))
        for name, (kind, *_) in _RANGES.items():  # numpy scalars -> int / float
            object.__setattr__(self, name, kind(getattr(self, name)))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SearcherOptions:
        """Build from a mapping, e.g. a checkpoint's options (unknown keys rejected).

        Keys a checkpoint written by an older version lacks take their defaults.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SearcherSetupError(
                f"ScaMLGPSearch options: unknown option(s) {unknown}; valid options "
                f"are {sorted(known)}"
            )
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of the options (for checkpoints)."""
        return dataclasses.asdict(self)


# name -> (kind, lower bound, inclusive?, description of the range)
_RANGES: dict[str, tuple[type, float, bool, str]] = {
    "beta": (float, 0.0, False, "a finite number > 0"),
    "restarts": (int, 0, True, "an integer >= 0"),
    "num_restarts": (int, 1, True, "an integer >= 1"),
    "raw_samples": (int, 1, True, "an integer >= 1 and >= num_restarts"),
    "meta_restarts": (int, 0, True, "an integer >= 0"),
    "min_task_points": (int, 1, True, "an integer >= 1"),
    "max_fit_tasks": (int, 1, True, "an integer >= 1"),
    "num_fit_workers": (int, 0, True, "an integer >= 0"),
    "fit_num_cpus": (float, 0.0, True, "a finite number >= 0"),
    "fit_min_tasks_per_worker": (int, 1, True, "an integer >= 1"),
    "fit_max_retries": (int, 0, True, "an integer >= 0"),
    "num_threads": (int, 1, True, "an integer >= 1"),
}


def problems(values: Mapping[str, Any]) -> list[str]:
    """Every problem with the given option values (only the keys present).

    Args:
        values: Option name -> value, e.g. a job config's searcher options.

    Returns:
        Human-readable problems, each naming the option, the value and the range.
    """
    out = []
    if "acquisition" in values and values["acquisition"] not in ACQUISITIONS:
        out.append(
            f"acquisition: expected one of {list(ACQUISITIONS)}, got "
            f"{values['acquisition']!r}"
        )
    if "kernel" in values and values["kernel"] not in KERNELS:
        out.append(f"kernel: expected one of {list(KERNELS)}, got {values['kernel']!r}")
    for name, (kind, low, inclusive, allowed) in _RANGES.items():
        if name in values and not _in_range(values[name], kind, low, inclusive):
            out.append(f"{name}: must be {allowed}, got {values[name]!r}")
    raw, starts = values.get("raw_samples", 1), values.get("num_restarts", 1)
    if _is_int(raw) and _is_int(starts) and 1 <= raw < starts:
        out.append(
            f"raw_samples: must be >= num_restarts={starts} (each restart starts "
            f"from one of the screened candidates), got {raw}"
        )
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _in_range(value: Any, kind: type, low: float, inclusive: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if kind is int and not _is_int(value):
        return False
    number = float(value)
    if not math.isfinite(number):
        return False
    return number >= low if inclusive else number > low
