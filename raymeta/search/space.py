"""Tune search spaces <-> the unit cube the ScaML-GP core works in.

:func:`convert_search_space` is the one place where a Ray Tune ``param_space`` is
turned into a :class:`SearchSpace`: an ordered list of encoded parameters that maps a
(flattened) config to a point ``x`` in ``[0, 1]^d`` (:meth:`SearchSpace.encode`) and
any point of the cube back to a valid config (:meth:`SearchSpace.decode`).

Support matrix (nested dicts are flattened with ``"/"``: ``{"opt": {"lr": ...}}``
becomes the parameter ``"opt/lr"``):

===========================  =============================================  ==========
Tune domain                  encoding (one column unless noted)             decoded as
===========================  =============================================  ==========
``uniform(l, u)``            linear in ``[l, u]``                           float
``loguniform(l, u)``         linear in ``[log l, log u]``                   float
``quniform(l, u, q)``        linear, snapped to the nearest multiple of q   float
``qloguniform(l, u, q)``     log, snapped to the nearest multiple of q      float
``randint(l, u)``            ``u - l`` equal bins (upper bound exclusive)   int
``qrandint(l, u, q)``        one bin per multiple of q (upper inclusive)    int
``lograndint(l, u)``         log-width bins over ``l .. u-1``               int
``qlograndint(l, u, q)``     log-width bins over the multiples of q         int
``choice([...])``            **one-hot**, k columns; decoded by argmax      category
:func:`ordinal` ``([...])``  one column, the values in order (log spacing    a value
                             with ``log=True``); decoded to the nearest
constants                    not encoded; passed through unchanged          as given
===========================  =============================================  ==========

:func:`ordinal` is raymeta's domain for an ordered grid of numbers that no Tune
domain spells exactly (batch sizes 8, 16, 32, 64; learning rates 5e-4, 1e-3, 5e-3,
...): it *is* a ``tune.choice`` (a ``Categorical`` subclass), so every other Tune
searcher treats it as one, while ScaMLGPSearch sees one ordered column.

Categorical parameters are one-hot encoded (not ordinal) so the GP sees no spurious
order between categories; their columns are decoded by argmax, so every point of the
cube decodes to a valid category. Grid-valued parameters (integers, quantised floats)
use bins of equal width (in log space for the log variants) centred on the grid
values, so encode/decode round-trips every grid value exactly.

Rejected with :class:`~raymeta.errors.SearchSpaceError` naming the key and domain:
``tune.sample_from`` (a function), ``tune.grid_search``, ``tune.randn``/``qrandn``
(unbounded normal), domains inside lists, and keys that contain ``"/"``.

Example:
    >>> from ray import tune
    >>> space = convert_search_space({"lr": tune.loguniform(1e-4, 1e-1),
    ...                               "net": {"width": tune.randint(8, 65)}})
    >>> space.names
    ('lr', 'net/width')
    >>> config = space.decode(space.encode({"lr": 1e-3, "net/width": 32}))
    >>> config["net/width"], round(config["lr"], 12)
    (32, 0.001)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.search.sample import (
    Categorical,
    Domain,
    Float,
    Function,
    Integer,
    LogUniform,
    Normal,
    Quantized,
    Uniform,
)

from raymeta.errors import SearchSpaceError

__all__ = [
    "SUPPORTED_DOMAINS",
    "Ordinal",
    "Parameter",
    "SearchSpace",
    "convert_search_space",
    "flatten_config",
    "ordinal",
    "unflatten_config",
]

SUPPORTED_DOMAINS = (
    "uniform, loguniform, quniform, qloguniform, randint, qrandint, lograndint, "
    "qlograndint, choice, raymeta's ordinal, and constants (nested dicts are "
    "flattened with '/')"
)


class Ordinal(Categorical):
    """An ordered grid of numbers: a ``tune.choice`` that knows its order.

    Args:
        values: Strictly increasing finite numbers (at least two).
        log: Space the values by their logarithm (all must be > 0).
    """

    def __init__(self, values: Any, log: bool = False):
        """Validate the grid (a :class:`SearchSpaceError` names the problem)."""
        values = list(values)
        _check_ordinal(values, log)
        super().__init__(values)
        self.log = bool(log)

    def __repr__(self) -> str:
        return f"ordinal({self.categories}, log={self.log})"


def ordinal(values: Any, *, log: bool = False) -> Ordinal:
    """A Tune domain over an ordered numeric grid, sampled uniformly like ``choice``.

    Example:
        >>> space = convert_search_space({"batch": ordinal([8, 16, 32, 64], log=True)})
        >>> space.dim, space.decode([0.4])["batch"]
        (1, 16)

    Raises:
        SearchSpaceError: Fewer than two values, non-numbers, values not strictly
            increasing, or a non-positive value with ``log=True``.
    """
    return Ordinal(values, log=log).uniform()


def _check_ordinal(values: list, log: bool) -> None:
    if len(values) < 2 or not all(_is_number(v) for v in values):
        raise SearchSpaceError(
            f"ordinal: expected at least two numbers, got {values!r}"
        )
    if any(b <= a for a, b in zip(values, values[1:])):
        raise SearchSpaceError(
            f"ordinal: values must be strictly increasing, got {values!r}"
        )
    if log and values[0] <= 0:
        raise SearchSpaceError(f"ordinal(log=True): values must be > 0, got {values!r}")


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float | np.number)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class Parameter:
    """One encoded search-space parameter.

    Attributes:
        name: Flattened key, e.g. ``"opt/lr"``.
        kind: ``"float"``, ``"int"``, ``"categorical"`` or ``"ordinal"``.
        lower: Smallest value the parameter can take (numeric kinds).
        upper: Largest value the parameter can take, inclusive (numeric kinds).
        log: Whether the encoding is linear in ``log(value)``.
        step: Grid spacing for integers and quantised floats; ``None`` = continuous.
        categories: The choices of a categorical parameter, or the increasing
            values of an ordinal one.
    """

    name: str
    kind: str
    lower: float = 0.0
    upper: float = 1.0
    log: bool = False
    step: float | None = None
    categories: tuple[Any, ...] = ()

    @property
    def width(self) -> int:
        """Number of unit-cube columns this parameter occupies."""
        return len(self.categories) if self.kind == "categorical" else 1

    def _edges(self) -> tuple[float, float]:
        # Grid parameters get half a step of margin so each grid value owns a bin of
        # equal width centred on it (equal width in log space for log parameters).
        half = 0.5 * self.step if self.step is not None else 0.0
        low, high = self.lower - half, self.upper + half
        return (math.log(low), math.log(high)) if self.log else (low, high)

    def encode(self, value: Any) -> np.ndarray:
        """Map one value to its unit-cube columns, shape ``(width,)``."""
        if self.kind == "categorical":
            onehot = np.zeros(len(self.categories))
            onehot[self.index_of(value)] = 1.0
            return onehot
        if self.kind == "ordinal":
            return self._ordinal_coordinates()[[self._ordinal_index(value)]]
        low, high = self._edges()
        t = math.log(float(value)) if self.log else float(value)
        return np.array([(t - low) / (high - low)])

    def decode(self, columns: np.ndarray) -> Any:
        """Map unit-cube columns (shape ``(width,)``) to a value inside the domain."""
        if self.kind == "categorical":
            return self.categories[int(np.argmax(columns))]
        if self.kind == "ordinal":
            u = float(np.clip(columns[0], 0.0, 1.0))
            return self.categories[
                int(np.abs(self._ordinal_coordinates() - u).argmin())
            ]
        low, high = self._edges()
        t = low + float(np.clip(columns[0], 0.0, 1.0)) * (high - low)
        value = math.exp(t) if self.log else t
        if self.step is not None:
            value = round(value / self.step) * self.step
        value = min(max(value, self.lower), self.upper)
        return int(round(value)) if self.kind == "int" else float(value)

    def _ordinal_coordinates(self) -> np.ndarray:
        v = np.asarray(self.categories, dtype=np.float64)
        v = np.log(v) if self.log else v
        return (v - v[0]) / (v[-1] - v[0])

    def _ordinal_index(self, value: Any) -> int:
        """Index of the grid value ``value`` equals (relative tolerance 1e-9)."""
        if _is_number(value):
            grid = np.asarray(self.categories, dtype=np.float64)
            close = np.isclose(grid, float(value), rtol=1e-9, atol=0.0)
            if close.any():
                return int(close.argmax())
        raise ValueError(f"{value!r} is not one of {list(self.categories)}")

    def index_of(self, value: Any) -> int:
        """Position of ``value`` among the categories (raises ValueError if absent)."""
        for i, category in enumerate(self.categories):
            if type(category) is type(value) and category == value:
                return i
        for i, category in enumerate(self.categories):
            if category == value:
                return i
        raise ValueError(f"{value!r} is not one of {list(self.categories)}")

    def contains(self, value: Any, *, atol: float = 1e-9) -> bool:
        """Whether ``value`` is a valid value of this parameter (bounds/choices)."""
        if self.kind in ("categorical", "ordinal"):
            find = self.index_of if self.kind == "categorical" else self._ordinal_index
            try:
                find(value)
            except ValueError:
                return False
            return True
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            return False
        scale = max(1.0, abs(self.lower), abs(self.upper))
        tol = atol * scale
        return bool(self.lower - tol <= float(value) <= self.upper + tol)

    def describe(self) -> str:
        """Human-readable domain, used in error messages."""
        if self.kind == "categorical":
            return f"choice({list(self.categories)})"
        if self.kind == "ordinal":
            return f"ordinal({list(self.categories)}, log={self.log})"
        scale = "log " if self.log else ""
        grid = f" step {self.step:g}" if self.step is not None else ""
        return f"{scale}{self.kind} in [{self.lower:g}, {self.upper:g}]{grid}"


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of encoded parameters plus the constants of a Tune space.

    Attributes:
        parameters: The searchable parameters, in encoding order.
        constants: Flattened constant entries of the Tune space (not encoded).
    """

    parameters: tuple[Parameter, ...]
    constants: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """Flattened names of the searchable parameters."""
        return tuple(p.name for p in self.parameters)

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the unit cube."""
        return sum(p.width for p in self.parameters)

    def parameter(self, name: str) -> Parameter:
        """The parameter called ``name`` (flattened key)."""
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """Encode a config (nested or flattened) as a point of ``[0,1]^d``.

        Args:
            config: Values for every searchable parameter; nested dicts and
                ``"a/b"`` keys are both accepted; constants are ignored.

        Returns:
            Array of shape ``(d,)``.

        Raises:
            SearchSpaceError: A parameter is missing or its value is invalid.
        """
        flat = flatten_config(config)
        columns = []
        for p in self.parameters:
            if p.name not in flat:
                raise SearchSpaceError(
                    f"config has no value for parameter {p.name!r}; expected keys "
                    f"{list(self.names)}, got {sorted(flat)}"
                )
            if not p.contains(flat[p.name]):
                raise SearchSpaceError(
                    f"parameter {p.name!r}: value {flat[p.name]!r} is outside its "
                    f"domain {p.describe()}"
                )
            columns.append(p.encode(flat[p.name]))
        return np.concatenate(columns) if columns else np.zeros(0)

    def decode(self, x: np.ndarray) -> dict[str, Any]:
        """Decode a point of the cube (shape ``(d,)``) into a flattened config.

        Every output lies inside the space: floats within bounds, integers as
        ``int``, quantised values on their grid, categories among the choices.
        Constants are included.
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.dim:
            raise SearchSpaceError(
                f"point has {x.shape[0]} coordinates; this space has dim {self.dim}"
            )
        config: dict[str, Any] = dict(self.constants)
        start = 0
        for p in self.parameters:
            config[p.name] = p.decode(x[start : start + p.width])
            start += p.width
        return config

    def canonical(self, x: np.ndarray) -> np.ndarray:
        """The encoding of the config ``x`` decodes to (what is really evaluated)."""
        return self.encode(self.decode(x))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A canonical point drawn uniformly from the cube, shape ``(d,)``."""
        return self.canonical(rng.random(self.dim))


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into ``"a/b"`` keys (non-dict values are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and "grid_search" not in value:
            flat.update(flatten_config(value, prefix=f"{name}/"))
        else:
            flat[name] = value
    return flat


def unflatten_config(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_config`: ``{"a/b": 1}`` -> ``{"a": {"b": 1}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def convert_search_space(spec: Mapping[str, Any]) -> SearchSpace:
    """Convert a Tune ``param_space`` into a :class:`SearchSpace`.

    Args:
        spec: The Tune search space (nested dicts of domains and constants).

    Returns:
        The encoded space; parameters keep the (flattened) order of ``spec``.

    Raises:
        SearchSpaceError: A key contains ``"/"``, or an entry is a domain raymeta
            cannot model (grid_search, sample_from, randn, domains in lists); the
            message names the key, the domain and the supported domains.
    """
    parameters: list[Parameter] = []
    constants: dict[str, Any] = {}
    for name, value in _walk(spec, ""):
        if isinstance(value, Domain):
            parameters.append(_convert_domain(name, value))
        elif isinstance(value, Mapping) and "grid_search" in value:
            _reject(name, "grid_search", "grid search enumerates values; use choice()")
        elif isinstance(value, list | tuple) and _holds_domain(value):
            _reject(name, "a list holding domains", "use a dict of domains instead")
        else:
            constants[name] = value
    return SearchSpace(tuple(parameters), constants)


def _walk(spec: Mapping[str, Any], prefix: str):
    for key, value in spec.items():
        if "/" in str(key):
            raise SearchSpaceError(
                f"search-space key {prefix}{key!r} contains '/', which raymeta uses "
                "to flatten nested dicts; rename the key"
            )
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and "grid_search" not in value:
            yield from _walk(value, f"{name}/")
        else:
            yield name, value


def _holds_domain(values: list | tuple) -> bool:
    for v in values:
        if isinstance(v, Domain):
            return True
        if isinstance(v, Mapping) and any(
            isinstance(x, Domain) for _, x in _walk(v, "")
        ):
            return True
        if isinstance(v, list | tuple) and _holds_domain(v):
            return True
    return False


def _reject(name: str, domain: str, hint: str) -> None:
    raise SearchSpaceError(
        f"search-space key {name!r}: domain {domain} is not supported by "
        f"ScaMLGPSearch ({hint}); supported: {SUPPORTED_DOMAINS}"
    )


def _convert_domain(name: str, domain: Domain) -> Parameter:
    sampler = domain.get_sampler()
    step = None
    if isinstance(sampler, Quantized):
        step = sampler.q
        sampler = sampler.get_sampler()
    label = f"{type(domain).__name__} with {type(sampler).__name__} sampler"
    if isinstance(domain, Function):
        _reject(name, "sample_from (a function)", "it cannot be encoded as bounds")
    if isinstance(sampler, Normal):
        _reject(name, f"{label} (randn/qrandn)", "a normal has no bounds")
    if isinstance(domain, Ordinal):
        return Parameter(
            name, "ordinal", categories=tuple(domain.categories), log=domain.log
        )
    if isinstance(domain, Categorical):
        if not domain.categories:
            _reject(name, "choice([]) with no categories", "give at least one")
        return Parameter(name, "categorical", categories=tuple(domain.categories))
    if not isinstance(sampler, Uniform | LogUniform) or not isinstance(
        domain, Float | Integer
    ):
        _reject(name, label, "unknown domain type")
    is_log = isinstance(sampler, LogUniform)
    if isinstance(domain, Integer):
        return _integer_parameter(name, domain, step, is_log)
    return _float_parameter(name, domain, step, is_log)


def _float_parameter(
    name: str, domain: Float, step: float | None, is_log: bool
) -> Parameter:
    lower, upper = float(domain.lower), float(domain.upper)
    if step is not None:
        # Clip the grid ends to the bounds: 3 * 0.1 is 0.30000000000000004 > 0.3.
        lower = max(_grid_bound(lower, step, math.ceil), lower)
        upper = min(_grid_bound(upper, step, math.floor), upper)
    if not (math.isfinite(lower) and math.isfinite(upper)) or upper < lower:
        _reject(name, f"Float({domain.lower}, {domain.upper})", "needs finite bounds")
    return Parameter(name, "float", lower, upper, log=is_log, step=step)


def _integer_parameter(
    name: str, domain: Integer, step: float | None, is_log: bool
) -> Parameter:
    # Tune: randint/lograndint exclude the upper bound; quantised ints (q != 1)
    # include it.
    q = int(step) if step is not None else 1
    lower = _grid_bound(domain.lower, q, math.ceil)
    upper = _grid_bound(domain.upper, q, math.floor)
    if step is None or q == 1:
        upper = min(upper, domain.upper - 1)
    if upper < lower:
        _reject(
            name,
            f"Integer({domain.lower}, {domain.upper}) with q={q}",
            "the range holds no value",
        )
    return Parameter(name, "int", float(lower), float(upper), log=is_log, step=q)


def _grid_bound(bound: float, step: float, round_fn) -> float:
    scaled = bound / step
    nearest = round(scaled)
    index = nearest if math.isclose(scaled, nearest) else round_fn(scaled)
    return index * step
