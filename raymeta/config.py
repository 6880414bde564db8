"""Typed job configurations: frozen keyword-only dataclasses loaded from TOML.

A job config is a frozen ``@dataclass(frozen=True, kw_only=True)`` subclass of
:class:`JobConfig`, registered under the name a TOML file gives in its ``job`` key.
Loading checks everything before a job launches and reports *every* problem in one
:class:`~raymeta.errors.ConfigError`: unknown keys (with the closest valid key),
missing required keys, wrong types, and the class's own cross-field checks
(:meth:`JobConfig.problems`).

Example:
    >>> from dataclasses import dataclass
    >>> @register_job_config("toy")
    ... @dataclass(frozen=True, kw_only=True)
    ... class ToyConfig(JobConfig):
    ...     steps: int = 10
    >>> parse_config({"job": "toy", "steps": 3})
    ToyConfig(job='toy', seed=0, steps=3)
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from raymeta.errors import ConfigError
from raymeta.names import name_problem

__all__ = [
    "JobConfig",
    "check_config",
    "job_names",
    "load_config",
    "override",
    "parse_config",
    "parse_section",
    "register_job_config",
]

_REGISTRY: dict[str, type[JobConfig]] = {}
C = TypeVar("C")


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobConfig:
    """Base of every job config.

    Attributes:
        job: The registered job name (the TOML ``job`` key).
        seed: Base seed; every generator in the job derives from it.
    """

    job: str = ""
    seed: int = 0

    #: Fields holding names that become path components (experiment, run, ...):
    #: each passes the store's name rule before anything starts.
    NAME_FIELDS: ClassVar[tuple[str, ...]] = (
        "experiment",
        "run_name",
        "extra_meta_experiments",
    )

    def problems(self) -> list[str]:
        """Cross-field checks; return a list of human-readable problems (empty = ok)."""
        return []

    def name_problems(self) -> list[str]:
        """Names that could escape their directory (see :mod:`raymeta.names`)."""
        out = []
        for field in self.NAME_FIELDS:
            value: Any = self
            for part in field.split("."):
                value = getattr(value, part, None)
            field = field.rsplit(".", 1)[-1]
            if isinstance(value, tuple | list):
                labelled = [
                    (f"{field}[{i}]: experiment", v) for i, v in enumerate(value)
                ]
            else:
                labelled = [(field.removesuffix("_name"), value)]
            for what, item in labelled:
                problem = None if item is None else name_problem(item, what=what)
                if problem:
                    out.append(problem)
        return out


def register_job_config(name: str) -> Callable[[type[C]], type[C]]:
    """Register a :class:`JobConfig` subclass under ``name`` (the TOML ``job`` key)."""

    def decorate(cls: type[C]) -> type[C]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"job name {name!r} is registered twice")
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return decorate


def check_config(cfg: JobConfig, *, source: str = "config") -> JobConfig:
    """Re-check a config object (e.g. after overriding fields); return it.

    Library entry points call this, so a config built in code, or changed with
    ``dataclasses.replace`` (``--run-name``, ``--store``), is held to the same
    rules as one loaded from TOML, before any worker or trial starts.

    Raises:
        ConfigError: Lists every problem found, prefixed with ``source``.
    """
    _raise_problems(cfg.name_problems() + cfg.problems(), source)
    return cfg


def override(cfg: C, changes: Mapping[str, Any]) -> C:
    """``cfg`` with ``changes`` applied; dotted keys reach into sections.

    Example: ``override(cfg, {"steps": 10, "scaling.num_workers": 2})``. The result
    is checked again (:func:`check_config`).

    Raises:
        ConfigError: An unknown key, or a problem of the changed config.
    """
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        head, dot, rest = key.partition(".")
        (nested.setdefault(head, {}) if dot else flat)[rest or head] = value
    names = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    unknown = sorted(set(flat) - names) + sorted(set(nested) - names)
    if unknown:
        raise ConfigError(f"override: unknown keys {unknown} (valid: {sorted(names)})")
    try:
        for head, sub in nested.items():
            flat[head] = dataclasses.replace(getattr(cfg, head), **sub)
        out = dataclasses.replace(cfg, **flat)  # type: ignore[type-var]
    except TypeError as err:
        raise ConfigError(f"override: {err}") from None
    if isinstance(out, JobConfig):
        check_config(out, source="config with overrides")
    return out


def _raise_problems(problems: list[str], source: str) -> None:
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{source}: {len(problems)} problem(s):\n{listing}")


def job_names() -> list[str]:
    """Names of all registered jobs."""
    return sorted(_REGISTRY)


def load_config(path: str | Path) -> JobConfig:
    """Read a TOML job config and validate it completely.

    Args:
        path: A ``.toml`` file with a top-level ``job = "<name>"`` key.

    Returns:
        The frozen, validated config object.

    Raises:
        ConfigError: The file is missing or unreadable, or any key/value is wrong;
            the message lists every problem.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config {str(path)!r} is a directory, not a file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset "
            f"{err.start} cannot be decoded ({err.reason}); save the file as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return parse_config(data, source=str(path))


def parse_config(data: Mapping[str, Any], *, source: str = "config") -> JobConfig:
    """Validate a mapping (e.g. parsed TOML) into the registered config class.

    Raises:
        ConfigError: Lists every problem found, prefixed with ``source``.
    """
    name = data.get("job")
    if name not in _REGISTRY:
        raise ConfigError(
            f"{source}: 'job' must be one of {sorted(_REGISTRY)}; got {name!r}"
        )
    return parse_section(_REGISTRY[name], data, source=source)


def parse_section(cls: type[C], data: Mapping[str, Any], *, source: str) -> C:
    """Validate ``data`` against the dataclass ``cls``, collecting every problem."""
    problems: list[str] = []
    layout = getattr(cls, "layout_problem", None)
    moved = layout(data) if layout is not None and isinstance(data, Mapping) else None
    if moved:
        _raise_problems([moved], source)
    value = _build(cls, data, "", problems)
    if not problems and isinstance(value, JobConfig):
        problems.extend(value.name_problems() + value.problems())
    _raise_problems(problems, source)
    return value  # type: ignore[return-value]


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        problems.append(f"{prefix or 'config'}: expected a table, got {data!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    known_problems = len(problems)
    for key in data:
        if key not in fields:
            renamed = [_KEY_RENAMES[key]] if _KEY_RENAMES.get(key) in fields else []
            close = renamed or difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"{prefix}{key}: unknown key{hint} (valid keys: {sorted(fields)})"
            )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        path = f"{prefix}{name}"
        if name not in data:
            no_default = field.default is dataclasses.MISSING
            if no_default and field.default_factory is dataclasses.MISSING:
                problems.append(f"{path}: required key is missing")
            continue
        kwargs[name] = _convert(hints[name], data[name], path, problems)
    if len(problems) > known_problems:
        return None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        problems.append(f"{prefix or 'config'}: {err}")
        return None


def _convert(hint: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{path}.", problems)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            converted = _convert(arg, value, path, trial)
            if not trial:
                return converted
        problems.append(f"{path}: expected {_name(hint)}, got {value!r}")
        return None
    if origin is Literal:
        if value not in args:
            problems.append(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected a table, got {value!r}")
            return None
        return dict(value)
    if origin is collections.abc.Callable:
        if not callable(value):
            problems.append(f"{path}: expected a callable, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            problems.append(f"{path}: expected a list, got {value!r}")
            return None
        item = args[0] if args else Any
        items = [
            _convert(item, v, f"{path}[{i}]", problems) for i, v in enumerate(value)
        ]
        return tuple(items) if origin is tuple else items
    return _convert_scalar(hint, value, path, problems)


def _convert_scalar(hint: Any, value: Any, path: str, problems: list[str]) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        problems.append(f"{path}: expected {hint.__name__}, got boolean {value!r}")
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        problems.append(f"{path}: expected {_name(hint)}, got {value!r}")
    return value


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# --------------------------------------------------------------------------------------
# Built-in job configs. Each method adds its config class below, registered under the
# name its TOML files give in ``job``. Config keys equal the library's argument names.
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Training jobs (SAMA, HeTRoM) share one shape: method keys at the top level and five
# sections, ``[data]``, ``[model]``, ``[optim]``, ``[scaling]`` and ``[storage]``,
# with one set of defaults. Config keys equal the library's argument names.
# --------------------------------------------------------------------------------------

#: Built-in model factories (``[model] factory``); anything else is an import path.
BUILTIN_MODELS = ("mlp", "cnn", "conv4", "resnet12")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSection:
    """``[model]``: the network the method trains.

    Attributes:
        factory: "mlp", "cnn" (small CNN, 32 channels), "conv4" (64 channels, the
            few-shot Conv4), "resnet12" (the few-shot ResNet-12; ``kwargs``
            ``channels`` sets its four widths) for square grey images, an import
            path ``"package.module:function"``, or (in code) a callable; a factory
            is called with ``kwargs`` and must return a ``torch.nn.Module``.
        hidden: Hidden widths of the built-in MLP / CNN head (empty = linear).
        kwargs: Keyword arguments for a user factory.
        dtype: Parameter dtype, "float32" or "float64".
        precision: "fp32", or "bf16" to run forward passes under bf16 autocast
            (parameters, optimizer state and SAMA's perturbation stay float32).
    """

    factory: str | Callable[..., Any] = "mlp"
    hidden: tuple[int, ...] = (64, 64)
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    dtype: Literal["float32", "float64"] = "float32"
    precision: Literal["fp32", "bf16"] = "fp32"

    def problems(self) -> list[str]:
        """Widths, precision vs dtype, and the factory's form (not its import)."""
        out = []
        if any(h < 1 for h in self.hidden):
            out.append(f"model.hidden: widths must be >= 1, got {list(self.hidden)}")
        if self.precision == "bf16" and self.dtype != "float32":
            out.append(
                "model.precision: bf16 autocast needs dtype = 'float32' master "
                f"weights, got dtype = {self.dtype!r}"
            )
        if isinstance(self.factory, str) and self.factory not in BUILTIN_MODELS:
            if ":" not in self.factory:
                out.append(
                    f"model.factory: expected one of {list(BUILTIN_MODELS)} or an "
                    f"import path 'package.module:function', got {self.factory!r}"
                )
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimSection:
    """``[optim]``: the optimizer of the trained model (SAMA: the base model).

    Attributes:
        name: "sgd", "adam" or "adamw" (SAMA has exact adaptations for these).
        lr: Learning rate.
        momentum: SGD momentum.
        dampening: SGD dampening.
        nesterov: SGD Nesterov momentum (needs momentum > 0, dampening = 0).
        weight_decay: Weight decay (L2 for SGD/Adam, decoupled for AdamW).
        betas: Adam/AdamW moment coefficients.
    """

    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)

    def problems(self) -> list[str]:
        """Ranges and torch's own SGD rules, checked before anything starts."""
        out = []
        if not self.lr > 0:
            out.append(f"optim.lr: must be > 0, got {self.lr}")
        if self.momentum < 0 or not 0 <= self.dampening <= 1:
            out.append(
                "optim.momentum >= 0 and 0 <= optim.dampening <= 1; got "
                f"{self.momentum}, {self.dampening}"
            )
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            out.append("optim.nesterov: needs momentum > 0 and dampening = 0")
        if self.weight_decay < 0:
            out.append(f"optim.weight_decay: must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            out.append(f"optim.betas: two values in [0, 1), got {list(self.betas)}")
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScalingSection:
    """``[scaling]``: how many workers, where, and how failures are handled.

    Attributes:
        num_workers: Ray Train workers (0 = run in the driver, local mode).
        use_gpu: One GPU per worker (nccl); CPU workers use gloo.
        placement_strategy: "PACK", "SPREAD", "STRICT_PACK" or "STRICT_SPREAD".
        max_failures: Worker-group restarts allowed.
        timeout_minutes: Collective timeout (a hung rank fails the attempt).
    """

    num_workers: int = 1
    use_gpu: bool = False
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = (
        "PACK"
    )
    max_failures: int = 0
    timeout_minutes: float = 5.0

    def problems(self) -> list[str]:
        """Non-negative counts, positive timeout."""
        out = []
        for name in ("num_workers", "max_failures"):
            if getattr(self, name) < 0:
                out.append(f"scaling.{name}: must be >= 0, got {getattr(self, name)}")
        if not self.timeout_minutes > 0:
            out.append(
                f"scaling.timeout_minutes: must be > 0, got {self.timeout_minutes}"
            )
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class StorageSection:
    """``[storage]``: where checkpoints and results go, and the run's names.

    Attributes:
        experiment: Results-store experiment ("" = the job name).
        run_name: Ray run name, also the store's ``run_id``; rerunning with it
            resumes. None = ``"<experiment>-s<seed>"``.
        storage_path: Ray Train storage (checkpoints); shared on multi-node runs.
        store: Results-store root (path or URI); None writes nothing.
    """

    experiment: str = ""
    run_name: str | None = None
    storage_path: str = "/tmp/raymeta-runs"
    store: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSection:
    """``[data]`` keys both methods share.

    Attributes:
        dataset: A built-in name, or an import path ``"package.module:function"``
            called with ``kwargs`` on the driver (see :mod:`raymeta.tasks.sources`).
        kwargs: Keyword arguments of a user data function.
        feature_column: Feature column of a Ray Dataset / dict batch.
        label_column: Integer label column.
    """

    dataset: str = ""
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    feature_column: str = "x"
    label_column: str = "label"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamaData(DataSection):
    """SAMA's ``[data]``: built-in "digits" / "blobs" or the user's data.

    Attributes:
        noise_rate: Symmetric label-noise rate of a built-in training set.
        meta_per_class: Clean meta examples per class (digits).
        train_set: "noisy", "noisy+meta", "meta" (clean meta set only) or
            "clean" (oracle: only correctly labelled training points).
        keep_ids_path: Optional ``.npy`` of training-example ids to train on.
        id_column: Example-id column of user data (row numbers if absent).
    """

    dataset: str = "digits"
    noise_rate: float = 0.4
    meta_per_class: int = 10
    train_set: Literal["noisy", "noisy+meta", "meta", "clean"] = "noisy"
    keep_ids_path: str | None = None
    id_column: str = "id"

    def problems(self) -> list[str]:
        """Noise rate range."""
        if not 0.0 <= self.noise_rate < 1.0:
            return [f"data.noise_rate: must be in [0, 1), got {self.noise_rate}"]
        return []


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeTRoMData(DataSection):
    """HeTRoM's ``[data]``: a registered task family or the user's labelled data.

    Attributes:
        ways, shots, queries: The episode shape.
        noisy_fraction, outlier_fraction, noise_prob: Injected contamination
            (noisy: labels resampled w.p. ``noise_prob``; outlier: from the
            family's outlier domain).
        easy_fraction: Share of easy tasks (the family's ``sample_easy``).
        test_classes: Fraction of a user dataset's classes held out for testing
            (ignored when the data function returns its own ``test`` split).
    """

    dataset: str = "gaussian_clusters"
    ways: int = 5
    shots: int = 1
    queries: int = 15
    noisy_fraction: float = 0.2
    outlier_fraction: float = 0.2
    noise_prob: float = 0.8
    easy_fraction: float = 0.0
    test_classes: float = 0.3

    def problems(self) -> list[str]:
        """Episode sizes and contamination fractions."""
        out = []
        for name in ("ways", "shots", "queries"):
            if getattr(self, name) < 1:
                out.append(f"data.{name}: must be >= 1, got {getattr(self, name)}")
        fracs = (
            self.noisy_fraction,
            self.outlier_fraction,
            self.easy_fraction,
            self.noise_prob,
        )
        if min(fracs) < 0 or max(fracs) > 1 or sum(fracs[:3]) > 1:
            out.append(
                "data.noisy_fraction, outlier_fraction, easy_fraction, noise_prob: "
                f"each in [0, 1] and noisy + outlier + easy <= 1; got {fracs}"
            )
        if not 0 < self.test_classes < 1:
            out.append(f"data.test_classes: must be in (0, 1), got {self.test_classes}")
        return out


SECTIONS = ("data", "model", "optim", "scaling", "storage")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingConfig(JobConfig):
    """Shared shape of the training jobs: the loop cadence and the five sections.

    Attributes:
        steps: Training steps (SAMA: base steps; HeTRoM: meta steps).
        report_every: ``ray.train.report`` every this many steps (lock-step).
        checkpoint_every: Checkpoint, and write the results rows so far, every this
            many steps (0 = only at the end).
        check_every: Check parameters are bit-identical across ranks every this
            many steps (0 = only at checkpoints and the end).
    """

    steps: int = 1000
    report_every: int = 100
    checkpoint_every: int = 500
    check_every: int = 0
    data: DataSection = dataclasses.field(default_factory=DataSection)
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)
    scaling: ScalingSection = dataclasses.field(default_factory=ScalingSection)
    storage: StorageSection = dataclasses.field(default_factory=StorageSection)

    NAME_FIELDS: ClassVar[tuple[str, ...]] = ("experiment", "run_name")

    @property
    def experiment(self) -> str:
        """The results-store experiment (the job name when unset)."""
        return self.storage.experiment or self.job

    @property
    def run_name(self) -> str:
        """The Ray run name and store ``run_id`` (``<experiment>-s<seed>`` default)."""
        return self.storage.run_name or f"{self.experiment}-s{self.seed}"

    @property
    def store(self) -> str | None:
        """The results-store root (None writes nothing)."""
        return self.storage.store

    @property
    def storage_path(self) -> str:
        """Ray Train's storage path."""
        return self.storage.storage_path

    def problems(self) -> list[str]:
        """Loop cadence and every section's own checks."""
        out = []
        for name in ("steps", "report_every"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "check_every"):
            if getattr(self, name) < 0:
                out.append(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in SECTIONS:
            section_problems = getattr(getattr(self, name), "problems", None)
            if section_problems is not None:
                out += section_problems()
        return out

    @classmethod
    def layout_problem(cls, data: Mapping[str, Any]) -> str | None:
        """One message showing the sectioned layout when ``data`` is a flat config."""
        top = {f.name for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        home = {
            key: section
            for section in SECTIONS
            for key in (f.name for f in dataclasses.fields(hints[section]))
        }
        home |= _RENAMED
        moved = [k for k in data if k not in top and k in home]
        if not moved:
            return None
        lines = [f"{k} = {_toml(v)}" for k, v in data.items() if k not in moved]
        for section in SECTIONS:
            keys = [k for k in moved if home[k].split(".")[0] == section]
            if keys:
                lines.append(f"[{section}]")
                lines += [
                    f"{_section_key(home[k], k)} = {_toml(data[k])}" for k in keys
                ]
        return (
            f"keys {moved} belong in sections now ([data], [model], [optim], "
            "[scaling], [storage]); this config in the new shape:\n"
            + "\n".join(f"    {line}" for line in lines)
        )


#: Keys renamed in place (old -> new), named in the unknown-key error.
_KEY_RENAMES = {"head": "learner"}

#: Flat keys of the old layout whose sectioned name differs (section.key).
_RENAMED = {
    "base_optimizer": "optim.name",
    "base_lr": "optim.lr",
    "hidden": "model.hidden",
    "family": "data.dataset",
    "meta_lr": "optim.lr",
}


def _section_key(home: str, key: str) -> str:
    return home.split(".", 1)[1] if "." in home else key


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


@register_job_config("sama")
@dataclasses.dataclass(frozen=True, kw_only=True)
class SamaJobConfig(TrainingConfig):
    """SAMA meta-learning on Ray Train (``jobs/train_sama.py``).

    Top-level keys are SAMA's own; ``[optim]`` is the base optimizer, ``[model]``
    the base model, ``[data]`` the training (noisy) set and the clean meta set.

    Attributes:
        application: "reweight" (meta-weight-net), "prune" (per-example keep
            scores, meta set = training set) or "plain" (no meta steps).
        problem: Optional import path ``"package.module:Class"`` (or, in code, a
            class or instance) of the user's bilevel problem implementing
            ``base_loss`` / ``meta_loss`` (see ``raymeta.metalearn.problem``);
            None uses the application's problem.
        meta_lr: Adam learning rate of the meta-parameters λ.
        meta_hidden: Hidden width of the meta-weight-net / pruning net.
        radius: SAMA finite-difference radius R (1e-2 suits float32).
        adaptation: "auto" (optimizer adaptation) or "none" (SAMA-NA).
        cache_stop_grad: Reuse stop-gradient inputs at θ in the FD passes.
        unroll_steps: Base steps per meta step.
        batch_size: Base batch size per worker.
        meta_batch_size: Meta batch size per worker.
        eval_every: Evaluate test/meta accuracy every this many steps.
        keep_fraction: Fraction kept by pruning.
        normalize_weights: Reweighting: divide the meta-weight-net's weights by
            their batch mean, so only relative weights reach the base step
            (``raymeta.metalearn.reweighting``).
    """

    application: Literal["reweight", "prune", "plain"] = "reweight"
    problem: str | Any = None
    meta_lr: float = 1e-3
    meta_hidden: int = 100
    radius: float = 1e-2
    adaptation: Literal["auto", "none"] = "auto"
    cache_stop_grad: bool = True
    unroll_steps: int = 1
    steps: int = 2000
    batch_size: int = 128
    meta_batch_size: int = 100
    eval_every: int = 100
    keep_fraction: float = 0.7
    normalize_weights: bool = False
    data: SamaData = dataclasses.field(default_factory=SamaData)

    def problems(self) -> list[str]:
        """Cross-field checks (positive sizes, ranges) and the sections'."""
        out = super().problems()
        for (
            name
        ) in "unroll_steps batch_size meta_batch_size eval_every meta_hidden".split():
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("meta_lr", "radius"):
            if not getattr(self, name) > 0:
                out.append(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.keep_fraction <= 1.0:
            out.append(f"keep_fraction: must be in (0, 1], got {self.keep_fraction}")
        if self.problem is not None and self.application == "plain":
            out.append(
                "problem: a user problem needs application 'reweight' or 'prune'"
            )
        if self.normalize_weights and (
            self.application != "reweight" or self.problem is not None
        ):
            out.append(
                "normalize_weights: applies to the built-in meta-weight-net "
                "(application 'reweight' without a user problem); normalise inside "
                "your own problem's base_loss instead"
            )
        return out


@register_job_config("hetrom")
@dataclasses.dataclass(frozen=True, kw_only=True)
class HeTRoMConfig(TrainingConfig):
    """HeTRoM: ranked-range episodic meta-learning (``jobs/train_hetrom.py``).

    Top-level keys: the selection rule (``rule`` in plain/oracle/sort/dual/lognormal
    with ``m``, ``k``, ``threshold_lr``, ``c_hi``, ``c_lo``, ``warmup_steps``), the
    meta-learner (``learner`` in linear/protonet/anil/maml, with the inner loop
    ``inner_steps``, ``inner_lr``, ``l2``, ``first_order``), the embedding size
    (``embedding_dim``, ``embedding_scale`` of the built-in backbones; MAML's network
    outputs the logits instead) and the run (``steps``, ``tasks_per_batch``,
    ``test_tasks``, ``test_batch``). ``m`` and ``k`` count tasks of the global
    meta-batch; ``[optim]`` trains every meta-parameter (backbone, ANIL's head
    init).
    """

    rule: Literal["plain", "oracle", "sort", "dual", "lognormal"] = "sort"
    m: int = 8
    k: int = 20
    threshold_lr: float = 0.02
    c_hi: float = 1.0
    c_lo: float = 2.5
    warmup_steps: int = 100
    learner: Literal["linear", "protonet", "anil", "maml"] = "linear"
    inner_steps: int = 10
    inner_lr: float = 0.5
    l2: float = 1e-3
    first_order: bool = False
    embedding_dim: int = 32
    embedding_scale: float = 4.0
    steps: int = 1500
    tasks_per_batch: int = 20
    test_tasks: int = 600
    test_batch: int = 50
    checkpoint_every: int = 100
    report_every: int = 100
    data: HeTRoMData = dataclasses.field(default_factory=HeTRoMData)

    def problems(self) -> list[str]:
        """Cross-field checks (sizes, ranges, ranked range vs. batch size)."""
        out = super().problems()
        for name in "tasks_per_batch test_tasks test_batch embedding_dim".split():
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("inner_steps", "warmup_steps"):
            if getattr(self, name) < 0:
                out.append(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.learner == "maml" and self.inner_steps < 1:
            out.append(f"inner_steps: MAML needs >= 1, got {self.inner_steps}")
        for name in ("inner_lr", "threshold_lr", "embedding_scale"):
            if not getattr(self, name) > 0:
                out.append(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.rule in ("sort", "dual") and not 0 <= self.m < self.k:
            out.append(f"m, k: need 0 <= m < k, got m={self.m}, k={self.k}")
        if self.rule in ("sort", "dual") and self.k > self.tasks_per_batch:
            out.append(
                f"k: must be <= tasks_per_batch={self.tasks_per_batch}, got {self.k}"
            )
        if self.tasks_per_batch % max(self.scaling.num_workers, 1):
            out.append(
                f"tasks_per_batch={self.tasks_per_batch} must be divisible by "
                f"scaling.num_workers={self.scaling.num_workers}"
            )
        if self.test_tasks % self.test_batch:
            out.append(
                f"test_tasks={self.test_tasks} must be a multiple of "
                f"test_batch={self.test_batch}"
            )
        return out


@register_job_config("tune_scamlgp")
@dataclasses.dataclass(frozen=True, kw_only=True)
class TuneScaMLGPConfig(JobConfig):
    """Tune a benchmark task with ScaMLGPSearch (``jobs/tune_scamlgp.py``).

    The study (meta-tasks, meta-data, target task) is drawn from ``family`` with
    ``seed``; its meta-task observations are recorded in the store's ``trials`` table
    (one experiment per meta-task, idempotent), read back as meta-data, and the
    target task is tuned with every finished trial appended to the store.

    Attributes:
        experiment: Tune experiment name; resubmitting resumes it (Tuner.restore).
        storage_path: Tune storage path.
        store: Results-store root (meta-data source and trial sink).
        family: Task family in ``raymeta.tasks.bo.FAMILIES`` or a real tabular
            family of ``raymeta.tasks.tabular.TABULAR_FAMILIES`` (``fcnet``,
            ``hpobench_mlp``).
        target: Tabular families only: the target dataset (every other dataset
            of the family is a meta-task).
        noisy: Tabular families only: observe one random seed per trial instead
            of the seed mean (regret stays on the mean).
        num_meta_tasks: Meta-tasks M drawn for the study (parametric families).
        n_meta: Observations per meta-task N_m.
        use_meta_data: False tunes without meta-data (plain GP-BO).
        num_samples: Trials of the Tune run.
        max_concurrent: Trials in flight at once.
        acquisition: "ucb", "ei" or "logei".
        beta: UCB beta.
        restarts: Target-model fit restarts per suggestion.
        min_task_points: Meta-tasks with fewer observations are left out.
        max_fit_tasks: Target fits over more meta-tasks screen to this many.
        num_restarts: Acquisition optimiser restarts.
        raw_samples: Sobol candidates screened per suggestion.
        meta_restarts: Restarts per meta-task GP fit.
        num_fit_workers: Ray tasks fitting the meta-task GPs (0 = in the driver).
        fit_num_cpus: CPUs each fit task requests (0 never starves trials).
        kernel: "rbf" or "matern52" (meta-task GPs and the target's residual).
        extra_meta_experiments: Earlier experiments in the store whose trials are
            used as meta-data too (e.g. earlier runs on related targets).
    """

    experiment: str = "tune-scamlgp-branin"
    storage_path: str = "/tmp/raymeta-runs/tune"
    store: str = "/tmp/raymeta-runs/store"
    family: str = "branin"
    target: str = ""
    noisy: bool = False
    num_meta_tasks: int = 8
    n_meta: int = 32
    use_meta_data: bool = True
    num_samples: int = 20
    max_concurrent: int = 1
    acquisition: Literal["ucb", "ei", "logei"] = "ucb"
    beta: float = 9.0
    restarts: int = 5
    num_restarts: int = 4
    raw_samples: int = 1024
    meta_restarts: int = 5
    max_fit_tasks: int = 128
    min_task_points: int = 3
    num_fit_workers: int = 1
    fit_num_cpus: float = 0.0
    kernel: Literal["rbf", "matern52"] = "rbf"
    extra_meta_experiments: tuple[str, ...] = ()

    def problems(self) -> list[str]:
        """Cross-field checks (known family and target, positive sizes)."""
        out = self._family_problems()
        for name in ("num_meta_tasks", "n_meta", "num_samples", "max_concurrent"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        from raymeta.search.options import problems as option_problems

        out += option_problems(self.searcher_options())
        return out

    def _family_problems(self) -> list[str]:
        from raymeta.tasks.bo import FAMILIES
        from raymeta.tasks.tabular import TABULAR_FAMILIES

        names = sorted([*FAMILIES, *TABULAR_FAMILIES])
        if self.family not in names:
            return [f"family: expected one of {names}, got {self.family!r}"]
        tabular = TABULAR_FAMILIES.get(self.family)
        if tabular is None:
            if self.target or self.noisy:
                return [
                    "target/noisy: only for the tabular families "
                    f"{sorted(TABULAR_FAMILIES)}"
                ]
            return []
        if self.target not in tabular.datasets:
            return [
                f"target: the {self.family} target dataset, one of "
                f"{list(tabular.datasets)}; got {self.target!r}"
            ]
        return []

    def searcher_options(self) -> dict:
        """ScaMLGPSearch model options (keys equal its keyword arguments)."""
        keys = (
            "acquisition beta restarts num_restarts raw_samples meta_restarts "
            "max_fit_tasks min_task_points num_fit_workers fit_num_cpus kernel"
        ).split()
        return {k: getattr(self, k) for k in keys}
