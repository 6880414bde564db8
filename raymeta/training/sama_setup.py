"""SAMA's setup: its data on the driver and on a worker, its problem and meta module.

Driver side, :func:`prepare_sama_data` resolves the ``[data]`` section (built-in,
an import path, or splits passed in code) and checks the user's splits before any
worker starts: label columns, integer labels, labels inside the model's classes, a
meta set no larger than the training set. Ray Datasets are handed to the trainer
(``datasets=``: ``train`` is split across workers, ``meta``/``test`` are not); other
splits travel with the loop config as tensors.

Worker side, :func:`worker_data` turns that into a
:class:`~raymeta.tasks.datasets.NoisyDataset` plus the training pool.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from raymeta.config import SamaJobConfig
from raymeta.errors import TrainingSetupError
from raymeta.metalearn.models import build_model, load_object
from raymeta.metalearn.problem import BilevelProblem
from raymeta.metalearn.pruning import PruningNet, PruningProblem, make_teacher
from raymeta.metalearn.reweighting import (
    MetaWeightNet,
    ReweightingProblem,
    UnweightedProblem,
)
from raymeta.tasks.datasets import NoisyDataset
from raymeta.tasks.sources import (
    BUILTIN_SAMA_DATA,
    Arrays,
    as_arrays,
    builtin_sama_data,
    check_splits,
    is_ray_dataset,
    load_user_data,
    ray_schema_problem,
    training_arrays,
    user_sama_data,
)

__all__ = [
    "RAY_SPLIT",
    "derive_seed",
    "make_problem",
    "prepare_sama_data",
    "worker_data",
]

#: Placeholder in the loop config for a split the trainer carries as a Ray Dataset.
RAY_SPLIT = "<ray dataset>"
SPLITS = ("train", "meta", "test")


def derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from ``(seed, *parts)`` (e.g. rank, stream id)."""
    state = np.random.SeedSequence([seed, *parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


# ----------------------------------------------------------------------------- driver


def prepare_sama_data(
    cfg: SamaJobConfig, data: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resolve and check a run's data on the driver.

    Args:
        cfg: The run's config.
        data: Splits given in code (``{"train", "meta"[, "test"][, "num_classes"]}``),
            else the ``[data] dataset`` import path or built-in name is used.

    Returns:
        ``(loop_data, ray_datasets)``: what travels in the loop config (tensors, the
        :data:`RAY_SPLIT` placeholder, ``num_classes``) and the Ray Datasets.

    Raises:
        TrainingSetupError: Missing splits or columns, bad labels, a meta set larger
            than the training set, labels outside the model's classes.
    """
    if data is None and cfg.data.dataset in BUILTIN_SAMA_DATA:
        return {}, {}
    if data is None:
        data = load_user_data(cfg.data)
    if not isinstance(data, dict) or not {"train", "meta"} <= set(data):
        raise TrainingSetupError(
            "SAMA data must be a dict with 'train' and 'meta' splits (and optionally "
            f"'test', 'num_classes'); got {type(data).__name__}"
            + (f" with keys {sorted(data)}" if isinstance(data, dict) else "")
        )
    loop: dict[str, Any] = {}
    ray_sets: dict[str, Any] = {}
    facts: dict[str, tuple[int, int, tuple[int, ...]]] = {}
    for split in SPLITS:
        if data.get(split) is None:
            continue
        what = f"data split {split!r}"
        if is_ray_dataset(data[split]):
            facts[split] = _ray_facts(data[split], cfg.data, what)
            ray_sets[split], loop[split] = data[split], RAY_SPLIT
        else:
            arrays = as_arrays(data[split], cfg.data, what=what)
            facts[split] = (len(arrays), int(arrays.y.max()), tuple(arrays.x.shape[1:]))
            loop[split] = arrays
    max_label = max(f[1] for f in facts.values())
    loop["num_classes"] = int(data.get("num_classes") or max_label + 1)
    model = build_model(
        cfg.model, in_shape=facts["train"][2], out_features=loop["num_classes"], seed=0
    )
    check_splits(
        {s: f[0] for s, f in facts.items()},
        max_label,
        num_classes=loop["num_classes"],
        model_out=_output_width(model, facts["train"][2]),
    )
    return loop, ray_sets


def _ray_facts(
    dataset: Any, section: Any, what: str
) -> tuple[int, int, tuple[int, ...]]:
    problem = ray_schema_problem(dataset, section, what=what)
    if problem:
        raise TrainingSetupError(problem)
    first = dataset.take(1)
    if not first:
        raise TrainingSetupError(f"{what}: the Ray Dataset is empty")
    shape = tuple(np.asarray(first[0][section.feature_column]).shape)
    label = dataset.max(section.label_column)
    if not isinstance(label, int | np.integer):
        raise TrainingSetupError(
            f"{what}: labels in column {section.label_column!r} must be integers, got "
            f"{type(label).__name__}"
        )
    return dataset.count(), int(label), shape


def _output_width(model: torch.nn.Module, in_shape: tuple[int, ...]) -> int:
    dtype = next(model.parameters()).dtype
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *in_shape), dtype=dtype))
    except Exception as err:
        raise TrainingSetupError(
            f"the model fails on one batch of the data (input shape {in_shape}): "
            f"{type(err).__name__}: {err}"
        ) from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise TrainingSetupError(
            f"the model must return (batch, classes) logits, got "
            f"{getattr(out, 'shape', type(out).__name__)}"
        )
    return int(out.shape[1])


# ----------------------------------------------------------------------------- worker


def worker_data(ctx: Any) -> tuple[NoisyDataset, tuple[torch.Tensor, ...], bool]:
    """``(data, training pool (x, y, ids), sharded)`` on this worker.

    ``sharded`` is True when the training split is this worker's Ray Data shard
    (so it is sampled whole, not by ``rank::world``).
    """
    cfg: SamaJobConfig = ctx.cfg
    dtype = getattr(torch, cfg.model.dtype)
    if "train" not in ctx.data:
        data = builtin_sama_data(cfg.data, seed=cfg.seed, dtype=dtype)
        return data, _keep(training_arrays(data, cfg.data.train_set), cfg), False
    splits = {s: _split(ctx, s) for s in SPLITS if s in ctx.data}
    data = user_sama_data(
        splits["train"],
        splits["meta"],
        splits.get("test"),
        num_classes=ctx.data["num_classes"],
        dtype=dtype,
    )
    pool = training_arrays(data, cfg.data.train_set)
    return data, _keep(pool, cfg), ctx.data["train"] == RAY_SPLIT


def _split(ctx: Any, split: str) -> Arrays:
    value = ctx.data[split]
    if value != RAY_SPLIT:
        return value
    shard = ctx.dataset_shard(split)
    if shard is None:
        raise TrainingSetupError(f"split {split!r} is a Ray Dataset the trainer lacks")
    return as_arrays(shard, ctx.cfg.data, what=f"data split {split!r} (worker shard)")


def _keep(
    pool: tuple[torch.Tensor, ...], cfg: SamaJobConfig
) -> tuple[torch.Tensor, ...]:
    if not cfg.data.keep_ids_path:
        return pool
    keep = torch.as_tensor(np.load(cfg.data.keep_ids_path), dtype=torch.int64)
    mask = torch.isin(pool[2], keep)
    return tuple(a[mask] for a in pool)


# ----------------------------------------------------------------------------- problem


def make_problem(
    cfg: SamaJobConfig, model: torch.nn.Module
) -> tuple[BilevelProblem, torch.nn.Module]:
    """The bilevel problem and its meta module λ, seeded from ``cfg.seed``.

    A user problem (``cfg.problem``: import path, class or instance) gets the
    application's meta module unless it defines ``build_meta(model, generator)``.

    Raises:
        TrainingSetupError: The user problem does not import, or lacks
            ``base_loss`` / ``meta_loss`` / ``stop_grad_inputs``.
    """
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 1))
    dtype = next(model.parameters()).dtype
    if cfg.application == "prune":
        net: torch.nn.Module = PruningNet(cfg.meta_hidden, generator=gen, dtype=dtype)
        default: BilevelProblem = PruningProblem(make_teacher(model))
    else:
        net = MetaWeightNet(cfg.meta_hidden, generator=gen, dtype=dtype)
        default = (
            UnweightedProblem()
            if cfg.application == "plain"
            else ReweightingProblem(normalize=cfg.normalize_weights)
        )
    if cfg.problem is None:
        return default, net
    problem = _user_problem(cfg.problem)
    build_meta = getattr(problem, "build_meta", None)
    return problem, (build_meta(model, gen) if build_meta else net)


def _user_problem(spec: Any) -> Any:
    obj = load_object(spec, what="problem") if isinstance(spec, str) else spec
    problem = obj() if inspect.isclass(obj) else obj
    missing = [
        name
        for name in ("base_loss", "meta_loss", "stop_grad_inputs")
        if not callable(getattr(problem, name, None))
    ]
    if missing:
        raise TrainingSetupError(
            f"problem {spec!r} lacks {missing}; subclass "
            "raymeta.metalearn.problem.BilevelProblem and implement base_loss and "
            "meta_loss"
        )
    return problem
