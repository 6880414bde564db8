"""The SAMA per-worker training loop for Ray Train's ``TorchTrainer``.

Each worker runs :func:`sama_train_loop` with a config dict (the fields of
:class:`raymeta.config.SamaJobConfig`, plus optional test hooks). Per step:

1. **Base step** under DDP (``prepare_model``): the base loss weighted by the meta
   module (frozen for this step), ``backward`` (DDP averages θ-gradients), optimizer
   step.
2. Every ``unroll_steps`` a **SAMA meta step** on the unwrapped model: backward 1 (v)
   and the two finite-difference backwards are local
   (:func:`raymeta.metalearn.sama.sama_hypergradient`); the meta-gradient is then
   averaged with **one** flattened all-reduce (tag ``"meta_grad"``), and every rank
   applies the same Adam step to λ. With N workers the result is
   ``(1/N) Σ_k M_k p_k`` (per-rank base batch M_k, per-rank meta batch and ε_k),
   *not* the concatenated-batch estimate.
3. Every ``report_every`` steps all ranks call ``ray.train.report`` together; every
   ``checkpoint_every`` steps the report carries a complete checkpoint
   (:mod:`raymeta.training.checkpointing`). θ/λ bit-identity across ranks is checked
   every ``check_every`` meta steps and at the end.

On start the loop resumes from ``ray.train.get_checkpoint()`` (a retry after a worker
failure, or a rerun with the same run name) and reports ``attempt`` and
``restored_from_step``. Rank 0 returns a summary dict (``Result.return_value``):
history, final accuracies, learned per-example weights, parameter vectors,
per-rank checksums and ``attempt_started_at`` (``time.time()`` when this attempt's
loop began, to time restarts). Store writes happen in the job layer from that summary.

Test hooks in the config dict (not in the job config): ``fail_rank`` exits once
after the report of each step in ``fail_at_steps`` (a list) or of
``fail_once_at_step``, remembering the failures done in the file ``fail_marker``;
``stop_at_step`` (a meta step) makes ``fail_rank`` send itself ``SIGSTOP`` once, right
before that step's meta-gradient all-reduce, so the other ranks hang in the collective
until its timeout (recorded with the PID in ``fail_marker``, so a restarted rank does
not stop again); ``debug_dir`` makes every rank dump the inputs and output of its
first meta step there.

Pruning (``application="prune"``): λ is :class:`~raymeta.metalearn.pruning.PruningNet`
with hard Gumbel keep weights; an EMA teacher of θ is updated after every base step
and checkpointed with the run; the Gumbel noise is re-seeded from (seed, rank, step)
before each base step, so the step's meta step sees the same noise. Deterministic
keep scores are averaged over :func:`pruning_score_steps` and returned as the
summary's ``weights``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raymeta.config import SamaJobConfig, check_config
from raymeta.errors import TrainingSetupError
from raymeta.metalearn.problem import (
    BilevelProblem,
    trainable_parameters,
    validate_problem,
)
from raymeta.metalearn.pruning import (
    PruningNet,
    PruningProblem,
    ema_update_,
    make_teacher,
    pruning_scores,
)
from raymeta.metalearn.reweighting import (
    MetaWeightNet,
    ReweightingProblem,
    UnweightedProblem,
    example_weights,
)
from raymeta.metalearn.sama import check_optimizer_supported, sama_hypergradient
from raymeta.tasks.datasets import NoisyDataset, noisy_blobs, noisy_digits
from raymeta.training import collectives
from raymeta.training.checkpointing import (
    TrainingState,
    report_checkpoint,
    report_metrics,
    restore_from_ray,
)

__all__ = [
    "build_mlp",
    "derive_seed",
    "fit_sama",
    "load_dataset",
    "preflight",
    "pruning_score_steps",
    "state_dict_checksum",
    "sama_train_loop",
    "summary_metrics",
    "training_arrays",
    "write_sama_results",
]

_HOOK_KEYS = (
    "fail_once_at_step",
    "fail_at_steps",
    "fail_rank",
    "fail_marker",
    "stop_at_step",
    "debug_dir",
    "run_id",
)
SCORE_WINDOW = 0.25  # pruning scores are averaged over evaluations in this tail


# ----------------------------------------------------------------------------- setup


def derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from ``(seed, *parts)`` (e.g. rank, stream id)."""
    state = np.random.SeedSequence([seed, *parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def build_mlp(
    sizes: list[int], *, generator: torch.Generator, dtype: torch.dtype
) -> torch.nn.Sequential:
    """An MLP ``sizes[0] -> ... -> sizes[-1]`` with ReLU, seeded by ``generator``.

    Uses PyTorch's default ``Linear`` init distribution (uniform ±1/√fan_in) but draws
    from ``generator`` so that every rank builds identical weights.
    """
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = torch.nn.Linear(a, b, dtype=dtype)
        bound = 1.0 / a**0.5
        with torch.no_grad():
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
        layers.append(layer)
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def load_dataset(cfg: SamaJobConfig) -> NoisyDataset:
    """The dataset a config names (deterministic in ``cfg.seed``)."""
    dtype = getattr(torch, cfg.dtype)
    if cfg.dataset == "blobs":
        return noisy_blobs(seed=cfg.seed, noise_rate=cfg.noise_rate, dtype=dtype)
    data = noisy_digits(
        seed=cfg.seed, noise_rate=cfg.noise_rate, meta_per_class=cfg.meta_per_class
    )
    cast = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    for key in ("x_train", "x_meta", "x_test"):
        cast[key] = cast[key].to(dtype)
    return NoisyDataset(**cast)


def training_arrays(
    data: NoisyDataset, train_set: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, ids)`` of the training pool a baseline trains on.

    "noisy": the noisy training set; "noisy+meta": plus the clean meta set;
    "meta": only the clean meta set; "clean": only correctly labelled training points.
    Meta examples get ids after the training ids (``N + j``).
    """
    n = data.x_train.shape[0]
    meta_ids = torch.arange(n, n + data.x_meta.shape[0])
    train_ids = torch.arange(n)
    if train_set == "noisy":
        return data.x_train, data.y_train, train_ids
    if train_set == "noisy+meta":
        return (
            torch.cat([data.x_train, data.x_meta]),
            torch.cat([data.y_train, data.y_meta]),
            torch.cat([train_ids, meta_ids]),
        )
    if train_set == "meta":
        return data.x_meta, data.y_meta, meta_ids
    if train_set == "clean":
        keep = ~data.is_noisy
        return data.x_train[keep], data.y_train[keep], train_ids[keep]
    raise TrainingSetupError(f"unknown train_set {train_set!r}")


@dataclasses.dataclass
class _Run:
    cfg: SamaJobConfig
    hooks: dict[str, Any]
    rank: int
    world: int
    device: torch.device
    data: NoisyDataset
    pool: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    problem: BilevelProblem
    model: torch.nn.Module  # bare model
    net: torch.nn.Module  # DDP-wrapped when world > 1
    meta: torch.nn.Module
    opt: torch.optim.Optimizer
    meta_opt: torch.optim.Optimizer
    state: TrainingState
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _make_optimizer(cfg: SamaJobConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.base_optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.AdamW if cfg.base_optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.base_lr, weight_decay=cfg.weight_decay)


def _make_meta(
    cfg: SamaJobConfig, model: torch.nn.Module, dtype: torch.dtype
) -> tuple[BilevelProblem, torch.nn.Module]:
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 1))
    if cfg.application == "prune":
        net = PruningNet(cfg.meta_hidden, generator=gen, dtype=dtype)
        return PruningProblem(make_teacher(model)), net
    mwn = MetaWeightNet(cfg.meta_hidden, generator=gen, dtype=dtype)
    if cfg.application == "plain":
        return UnweightedProblem(), mwn
    return ReweightingProblem(), mwn


def _setup(config: dict[str, Any]) -> _Run:
    import ray.train
    import ray.train.torch

    hooks = {k: config[k] for k in _HOOK_KEYS if k in config}
    cfg = SamaJobConfig(**{k: v for k, v in config.items() if k not in _HOOK_KEYS})
    _check_stop_hook(cfg, hooks)
    ctx = ray.train.get_context()
    return _build_run(
        cfg,
        hooks,
        rank=ctx.get_world_rank(),
        world=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        wrap=lambda m: ray.train.torch.prepare_model(m, move_to_device=False),
    )


def _check_stop_hook(cfg: SamaJobConfig, hooks: dict[str, Any]) -> None:
    stop = hooks.get("stop_at_step")
    if stop is None:
        return
    if cfg.application == "plain" or stop % cfg.unroll_steps or not 0 < stop:
        raise TrainingSetupError(
            f"stop_at_step must be a meta step (a positive multiple of unroll_steps="
            f"{cfg.unroll_steps}, application != 'plain'), got {stop}"
        )
    if "fail_rank" not in hooks or "fail_marker" not in hooks:
        raise TrainingSetupError("stop_at_step needs fail_rank and fail_marker")


def _build_run(
    cfg: SamaJobConfig,
    hooks: dict[str, Any],
    *,
    rank: int,
    world: int,
    device: torch.device,
    wrap: Any,
) -> _Run:
    dtype = getattr(torch, cfg.dtype)
    data = load_dataset(cfg)
    pool = training_arrays(data, cfg.train_set)
    if cfg.keep_ids_path:
        keep = torch.as_tensor(np.load(cfg.keep_ids_path), dtype=torch.int64)
        mask = torch.isin(pool[2], keep)
        pool = (pool[0][mask], pool[1][mask], pool[2][mask])
    sizes = [data.x_train.shape[1], *cfg.hidden, data.num_classes]
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 0))
    model = build_mlp(sizes, generator=gen, dtype=dtype).to(device)
    problem, meta = _make_meta(cfg, model, dtype)
    meta = meta.to(device)
    modules = {"base": model, "meta": meta}
    if isinstance(problem, PruningProblem):
        modules["teacher"] = problem.teacher
    opt = _make_optimizer(cfg, model.parameters())
    if cfg.application != "plain":
        check_optimizer_supported(opt)
    meta_opt = torch.optim.Adam(meta.parameters(), lr=cfg.meta_lr)
    net = wrap(model)
    state = TrainingState(
        modules=modules,
        optimizers={"base": opt, "meta": meta_opt},
        generators={
            "base_batches": torch.Generator().manual_seed(
                derive_seed(cfg.seed, 2, rank)
            ),
            "meta_batches": torch.Generator().manual_seed(
                derive_seed(cfg.seed, 3, rank)
            ),
        },
    )
    return _Run(
        cfg,
        hooks,
        rank,
        world,
        device,
        data,
        pool,
        problem,
        model,
        net,
        meta,
        opt,
        meta_opt,
        state,
    )


def _validate(run: _Run) -> None:
    if run.cfg.application == "plain":
        return
    probe = torch.Generator().manual_seed(0)
    base = _sample(run.pool, 2, probe, (run.rank, run.world), run.device)
    meta = _sample(_meta_arrays(run), 2, probe, (0, 1), run.device)
    validate_problem(run.problem, run.model, run.meta, base, meta)


def preflight(cfg: SamaJobConfig) -> None:
    """Build the run in this process and validate it, before any Ray worker starts.

    Checks the optimizer has a SAMA adaptation, the data load, batch structures
    agree and λ reaches the base loss (:func:`validate_problem`).

    Raises:
        ConfigError: The config breaks a rule of the loader (e.g. an unsafe
            experiment or run name), so nothing trains only to be refused later.
        TrainingSetupError: Any of these checks fails.
    """
    check_config(cfg, source="SAMA config")
    run = _build_run(
        cfg, {}, rank=0, world=1, device=torch.device("cpu"), wrap=lambda m: m
    )
    _validate(run)


# ----------------------------------------------------------------------------- steps


def _sample(
    arrays: tuple[torch.Tensor, ...],
    size: int,
    generator: torch.Generator,
    shard: tuple[int, int],
    device: torch.device,
) -> tuple[torch.Tensor, ...]:
    """A batch drawn with replacement from this rank's shard ``rows[rank::world]``."""
    rank, world = shard
    rows = torch.arange(arrays[0].shape[0])[rank::world]
    pick = rows[torch.randint(rows.numel(), (size,), generator=generator)]
    return tuple(a[pick].to(device) for a in arrays)


def _meta_arrays(run: _Run) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if run.cfg.application == "prune":
        return run.pool  # the training set is the meta set
    n = run.data.x_train.shape[0]
    ids = torch.arange(n, n + run.data.x_meta.shape[0])
    return run.data.x_meta, run.data.y_meta, ids


def _base_step(run: _Run, batch: tuple[torch.Tensor, ...], step: int) -> float:
    pruning = isinstance(run.problem, PruningProblem)
    if pruning:  # fresh Gumbel noise per (seed, rank, step), shared by the meta step
        run.problem.noise_seed = derive_seed(run.cfg.seed, 4, run.rank, step)
    run.meta.requires_grad_(False)
    try:
        loss = run.problem.base_loss(run.net, run.meta, batch)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        run.meta.requires_grad_(True)
    run.opt.step()
    if pruning:
        ema_update_(run.problem.teacher, run.model)
    return float(loss.detach())


def _meta_step(
    run: _Run,
    base_batch: tuple[torch.Tensor, ...],
    meta_batch: tuple[torch.Tensor, ...],
    step: int,
) -> dict[str, float]:
    cfg = run.cfg
    result = sama_hypergradient(
        run.problem,
        run.model,
        run.meta,
        base_batch,
        meta_batch,
        run.opt,
        radius=cfg.radius,
        adaptation=cfg.adaptation,
        cache_stop_grad=cfg.cache_stop_grad,
    )
    local = [g.clone() for g in result.grads]
    grads = result.grads
    _maybe_stop(run, step)
    collectives.all_reduce_mean_(grads, tag="meta_grad")
    if "debug_dir" in run.hooks and run.state.extra.get("meta_steps", 0) == 0:
        _dump_meta_step(run, base_batch, meta_batch, local, grads)
    for p, g in zip(trainable_parameters(run.meta), grads):
        p.grad = g
    run.meta_opt.step()
    run.meta_opt.zero_grad(set_to_none=True)
    run.state.extra["meta_steps"] = run.state.extra.get("meta_steps", 0) + 1
    return {"meta_loss": float(result.meta_loss), "epsilon": result.epsilon}


def _dump_meta_step(run, base_batch, meta_batch, local, reduced) -> None:
    path = Path(run.hooks["debug_dir"]) / f"meta_step_rank{run.rank}.pt"
    torch.save(
        {
            "model": run.model.state_dict(),
            "meta": run.meta.state_dict(),
            "opt": run.opt.state_dict(),
            "last_grads": [p.grad.clone() for p in run.model.parameters()],
            "base_batch": base_batch,
            "meta_batch": meta_batch,
            "local": local,
            "reduced": [g.clone() for g in reduced],
        },
        path,
    )


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(-1) == y).double().mean())


def _evaluate(run: _Run) -> dict[str, float]:
    dev = run.device
    test = _accuracy(run.model, run.data.x_test.to(dev), run.data.y_test.to(dev))
    meta = _accuracy(run.model, run.data.x_meta.to(dev), run.data.y_meta.to(dev))
    extra = run.state.extra
    if meta > extra.get("best_meta_acc", -1.0):
        extra["best_meta_acc"], extra["test_acc_at_best_meta"] = meta, test
    return {"test_acc": test, "meta_acc": meta}


def _check_ranks(run: _Run) -> None:
    collectives.assert_identical_across_ranks(
        list(run.model.parameters()), what="base parameters"
    )
    collectives.assert_identical_across_ranks(
        list(run.meta.parameters()), what="meta parameters"
    )


def _maybe_fail(run: _Run, step: int) -> None:
    """Test hook: exit ``fail_rank`` once at each of its fail steps (marker file)."""
    hooks = run.hooks
    steps = list(hooks.get("fail_at_steps", ()))
    if "fail_once_at_step" in hooks:
        steps.append(hooks["fail_once_at_step"])
    if step not in steps or hooks.get("fail_rank") != run.rank:
        return
    marker = Path(hooks["fail_marker"])
    line = f"rank {run.rank} exited at step {step}"
    if marker.exists() and line in marker.read_text().splitlines():
        return
    with marker.open("a") as f:
        f.write(line + "\n")
    time.sleep(1.0)  # let the controller register the checkpoint just reported
    os._exit(1)


def _maybe_stop(run: _Run, step: int) -> None:
    """Test hook: ``SIGSTOP`` ``fail_rank`` once at ``stop_at_step`` (marker file).

    Called right before the meta-gradient all-reduce: the other ranks enter the
    collective and hang in it until the process group's timeout fails them. The
    marker line (with the PID) is written before stopping.
    """
    hooks = run.hooks
    if hooks.get("stop_at_step") != step or hooks.get("fail_rank") != run.rank:
        return
    marker = Path(hooks["fail_marker"])
    line = f"rank {run.rank} stopped at step {step}"
    if marker.exists() and any(
        done.startswith(line) for done in marker.read_text().splitlines()
    ):
        return
    with marker.open("a") as f:
        f.write(f"{line} pid {os.getpid()}\n")
    # Ray Train V2 fetches one queued report per worker per health-check poll and
    # registers a checkpoint only once every rank's report arrived: without this
    # pause a checkpoint reported a few steps earlier can be lost with the stopped
    # rank (the run then resumes from the one before; seen in the C3 test).
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGSTOP)


def pruning_score_steps(cfg: SamaJobConfig) -> list[int]:
    """Steps whose deterministic pruning scores are averaged into the final scores.

    The evaluation steps (multiples of ``eval_every``) in the last
    ``SCORE_WINDOW`` of training, and always the final step.
    """
    start = cfg.steps * (1.0 - SCORE_WINDOW)
    steps = range(cfg.eval_every, cfg.steps + 1, cfg.eval_every)
    return sorted({s for s in steps if s > start} | {cfg.steps})


def _accumulate_scores(run: _Run) -> None:
    """Add the current deterministic keep scores ``(N,)`` to the running average."""
    x, y = run.data.x_train.to(run.device), run.data.y_train.to(run.device)
    scores = pruning_scores(run.model, run.problem.teacher, run.meta, x, y)
    extra = run.state.extra
    total = extra.get("score_sum", torch.zeros(x.shape[0], dtype=torch.float64))
    extra["score_sum"] = total + scores.double().cpu()
    extra["score_count"] = extra.get("score_count", 0) + 1


# ----------------------------------------------------------------------------- loop


def sama_train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """Per-worker SAMA loop; pass it to :func:`raymeta.training.trainer.build_trainer`.

    Args:
        config: Fields of :class:`~raymeta.config.SamaJobConfig` (as a dict) plus the
            optional test hooks listed in the module docstring.

    Returns:
        On rank 0, a summary dict (see :func:`_summary`); None on other ranks.

    Raises:
        TrainingSetupError: The problem is set up wrongly (checked before step 1).
        RankDivergenceError: θ or λ differ between ranks.
    """
    started_at = time.time()
    run = _setup(config)
    cfg, state = run.cfg, run.state
    restored = restore_from_ray(state, rank=run.rank)
    run.history = list(state.extra.get("history", []))
    base_arrays = (*run.pool,)
    meta_arrays = _meta_arrays(run)
    shard = (run.rank, run.world)
    gens = state.generators
    if not restored:
        _validate(run)
    collectives.COUNTER.reset()
    start = time.perf_counter()
    score_steps = set(pruning_score_steps(cfg)) if cfg.application == "prune" else ()
    metrics: dict[str, Any] = {}
    while state.step < cfg.steps:
        step = state.step + 1
        batch = _sample(
            base_arrays, cfg.batch_size, gens["base_batches"], shard, run.device
        )
        metrics = {"base_loss": _base_step(run, batch, step)}
        if cfg.application != "plain" and step % cfg.unroll_steps == 0:
            meta_batch = _sample(
                meta_arrays,
                cfg.meta_batch_size,
                gens["meta_batches"],
                (0, 1),
                run.device,
            )
            metrics.update(_meta_step(run, batch, meta_batch, step))
            if cfg.check_every and state.extra["meta_steps"] % cfg.check_every == 0:
                _check_ranks(run)
        state.step = step
        state.cursor = {"samples_seen": step * cfg.batch_size}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics.update(_evaluate(run))
        if step in score_steps:
            _accumulate_scores(run)
        _record_and_report(run, step, metrics, start)
        _maybe_fail(run, step)
    _check_ranks(run)
    checksums = _rank_checksums(run)
    node_ids = _node_ids()
    if run.rank != 0:
        return None
    return {
        **_summary(run, checksums, time.perf_counter() - start),
        "node_ids": node_ids,
        "attempt_started_at": started_at,
    }


def _record_and_report(
    run: _Run, step: int, metrics: dict[str, Any], start: float
) -> None:
    cfg, state = run.cfg, run.state
    checkpoint_now = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
    report_now = step % cfg.report_every == 0 or step == cfg.steps or checkpoint_now
    if not report_now:
        return
    row = {
        "step": step,
        **metrics,
        "attempt": state.attempt,
        "restored_from_step": state.restored_from_step,
        "meta_grad_collectives": collectives.COUNTER["meta_grad"],
        "meta_steps": state.extra.get("meta_steps", 0),
        "wall_time_s": time.perf_counter() - start,
    }
    run.history.append(row)
    state.extra["history"] = run.history
    if checkpoint_now:
        state.extra["state_checksum"] = {"step": step, "value": _state_checksum(run)}
        report_checkpoint(row, state, rank=run.rank)
    else:
        report_metrics(row)


def _state_checksum(run: _Run) -> int:
    """Checksum of every module's state dict (what a checkpoint must restore)."""
    return state_dict_checksum(run.state.modules)


def state_dict_checksum(modules: dict[str, torch.nn.Module]) -> int:
    """63-bit checksum of the state dicts of ``modules`` (by name, then key)."""
    tensors = [
        t
        for name in sorted(modules)
        for _, t in sorted(modules[name].state_dict().items())
    ]
    return collectives.tensor_checksum(tensors)


def _rank_checksums(run: _Run) -> list[int]:
    local = collectives.tensor_checksum(
        [*run.model.parameters(), *run.meta.parameters()]
    )
    gathered = collectives.all_gather_flat(torch.tensor([local], dtype=torch.int64))
    return [int(v) for v in gathered.reshape(-1).tolist()]


def _node_ids() -> list[str]:
    """Every worker's Ray node id (first 15 hex digits), gathered in rank order.

    Shows where the workers were placed; node ranks cannot, since simulated nodes on
    one machine share an IP address.
    """
    import ray

    local = int(ray.get_runtime_context().get_node_id()[:15], 16)
    gathered = collectives.all_gather_flat(torch.tensor([local], dtype=torch.int64))
    return [f"{int(v):015x}" for v in gathered.reshape(-1).tolist()]


def _final_weights(run: _Run) -> torch.Tensor:
    x, y = run.data.x_train.to(run.device), run.data.y_train.to(run.device)
    if run.cfg.application == "prune":
        extra = run.state.extra
        return (extra["score_sum"] / extra["score_count"]).float()
    return example_weights(run.model, run.meta, x, y).cpu()


def _flat_numpy(module: torch.nn.Module) -> np.ndarray:
    return (
        torch.cat([p.detach().reshape(-1) for p in module.parameters()]).cpu().numpy()
    )


def _summary(run: _Run, checksums: list[int], loop_seconds: float) -> dict[str, Any]:
    final = _evaluate(run)
    extra = run.state.extra
    weights = _final_weights(run)
    return {
        "history": run.history,
        "test_acc": final["test_acc"],
        "meta_acc": final["meta_acc"],
        "best_meta_acc": extra.get("best_meta_acc"),
        "test_acc_at_best_meta": extra.get("test_acc_at_best_meta"),
        "weights": weights.double().numpy(),
        "is_noisy": run.data.is_noisy.numpy(),
        "labels": run.data.y_train_true.numpy(),
        "observed_labels": run.data.y_train.numpy(),
        "example_ids": run.data.train_ids.numpy(),
        "base_params": _flat_numpy(run.model),
        "meta_params": _flat_numpy(run.meta),
        "rank_checksums": checksums,
        "attempt": run.state.attempt,
        "restored_from_step": run.state.restored_from_step,
        "meta_steps": extra.get("meta_steps", 0),
        "meta_grad_collectives_this_attempt": collectives.COUNTER["meta_grad"],
        "world_size": run.world,
        "loop_seconds": loop_seconds,
        "steps": run.state.step,
        "samples_per_s": _samples_per_s(run, loop_seconds),
    }


def _samples_per_s(run: _Run, loop_seconds: float) -> float | None:
    """Training throughput of this attempt; None when it ran no step."""
    steps = run.state.step - (run.state.restored_from_step or 0)
    if steps <= 0:
        return None
    return steps * run.cfg.batch_size * run.world / max(loop_seconds, 1e-9)


# ----------------------------------------------------------------------------- driver


def fit_sama(
    cfg: SamaJobConfig,
    *,
    run_name: str | None = None,
    hooks: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Run SAMA for ``cfg`` on a ``TorchTrainer`` and return Ray's ``Result``.

    Rerunning with the same ``run_name`` and ``cfg.storage_path`` resumes from the
    latest checkpoint. ``Result.return_value`` is rank 0's summary.

    Args:
        cfg: The validated job config.
        run_name: Ray run name (default ``cfg.run_name``).
        hooks: Optional test hooks (see the module docstring).
        callbacks: ``ray.train.UserCallback`` objects (e.g. progress display).

    Raises:
        TrainingFailedError: Workers failed more often than ``cfg.max_failures``
            allows; the message names the newest checkpoint to resume from.
    """
    from raymeta.training.trainer import run_trainer

    preflight(cfg)
    loop_config = {**dataclasses.asdict(cfg), **(hooks or {})}
    return run_trainer(
        sama_train_loop,
        loop_config,
        method="SAMA",
        run_name=run_name or cfg.run_name,
        storage_path=cfg.storage_path,
        num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu,
        placement_strategy=cfg.placement_strategy,
        max_failures=cfg.max_failures,
        timeout_minutes=cfg.timeout_minutes,
        callbacks=callbacks,
    )


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Headline numbers of a run summary (accuracies, weight AUC, throughput)."""
    from raymeta.metalearn.reweighting import weight_auc

    weights = torch.tensor(np.array(summary["weights"]))
    noisy = torch.tensor(np.array(summary["is_noisy"]))
    out = {
        "test_acc": summary["test_acc"],
        "meta_acc": summary["meta_acc"],
        "test_acc_at_best_meta": summary["test_acc_at_best_meta"] or float("nan"),
        "weight_auc": weight_auc(weights, noisy),
        "mean_weight_clean": float(weights[~noisy].mean()) if (~noisy).any() else 0.0,
        "mean_weight_noisy": float(weights[noisy].mean()) if noisy.any() else 0.0,
        "samples_per_s": summary["samples_per_s"],
        "attempt": float(summary["attempt"]),
    }
    return {k: float(v) for k, v in out.items() if v is not None}


def read_sama_summary(store: Any, experiment: str, run_id: str) -> dict[str, float]:
    """The ``summary/<name>`` figures a finished run wrote (empty if none yet).

    Args:
        store: A :class:`raymeta.results.ResultStore`.
        experiment: The run's experiment.
        run_id: The run's id (its run name).
    """
    if "metrics" not in store.tables():
        return {}
    rows = store.to_pandas(
        "metrics",
        filters=[("experiment", "=", experiment), ("run_id", "=", run_id)],
        columns=["name", "value"],
    )
    rows = rows[rows["name"].str.startswith("summary/")]
    return {
        n.removeprefix("summary/"): float(v)
        for n, v in zip(rows["name"], rows["value"], strict=True)
    }


def write_sama_results(
    store: Any, cfg: SamaJobConfig, summary: dict[str, Any], *, run_id: str
) -> None:
    """Append a run's metrics, final per-example weights and summary to ``store``.

    Tables: ``metrics`` (one row per reported number, plus ``summary/<name>`` rows at
    the final step) and ``data_weights`` (one row per training example, with the
    ground-truth ``is_noisy``). Appends are keyed by ``run_id`` (idempotent).

    Args:
        store: A :class:`raymeta.results.ResultStore`.
        cfg: The run's config.
        summary: ``Result.return_value`` of :func:`fit_sama`.
        run_id: Identifier of this run inside ``cfg.experiment``.
    """
    method = f"{cfg.application}:{cfg.train_set}"
    rows = [
        {
            "experiment": cfg.experiment,
            "run_id": run_id,
            "method": method,
            "step": int(row["step"]),
            "name": name,
            "value": float(value),
            "rank": 0,
            "attempt": int(row["attempt"]),
            "wall_time_s": float(row["wall_time_s"]),
        }
        for row in summary["history"]
        for name, value in row.items()
        if name not in ("step", "attempt", "wall_time_s")
        and isinstance(value, int | float)
    ]
    final_step = int(summary["steps"])
    rows += [
        {
            "experiment": cfg.experiment,
            "run_id": run_id,
            "method": method,
            "step": final_step,
            "name": f"summary/{name}",
            "value": value,
            "rank": 0,
            "attempt": int(summary["attempt"]),
        }
        for name, value in summary_metrics(summary).items()
    ]
    store.append("metrics", rows, key=(cfg.experiment, run_id, "metrics"))
    weights = [
        {
            "experiment": cfg.experiment,
            "run_id": run_id,
            "example_id": int(i),
            "weight": float(w),
            "label": int(lab),
            "observed_label": int(obs),
            "is_noisy": bool(n),
            "split": "train",
            "step": final_step,
        }
        for i, w, lab, obs, n in zip(
            summary["example_ids"],
            summary["weights"],
            summary["labels"],
            summary["observed_labels"],
            summary["is_noisy"],
        )
    ]
    store.append("data_weights", weights, key=(cfg.experiment, run_id, "weights"))
