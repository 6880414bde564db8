"""SAMA as a :class:`~raymeta.training.skeleton.WorkerProgram`.

Per step on every worker:

1. **Base step** under DDP (``prepare_model``): the base loss weighted by the meta
   module (frozen for this step), ``backward`` (DDP averages θ-gradients), optimizer
   step.
2. Every ``unroll_steps`` a **SAMA meta step** on the unwrapped model: backward 1 (v)
   and the two finite-difference backwards are local
   (:func:`raymeta.metalearn.sama.sama_hypergradient`); the meta-gradient is then
   averaged with **one** flattened all-reduce (tag ``"meta_grad"``), and every rank
   applies the same Adam step to λ. With N workers the result is
   ``(1/N) Σ_k M_k p_k`` (per-rank base batch M_k, per-rank meta batch and ε_k).

Data: a built-in set (``digits``, ``blobs``) or the user's splits
(:mod:`raymeta.tasks.sources`). Arrays and torch Datasets are read whole and rank
``r`` samples base batches from rows ``r::world``; a Ray Dataset train split is
already this worker's shard (``get_dataset_shard("train")``) and is sampled whole.
Meta batches are drawn from the whole meta set on every rank.

Pruning (``application="prune"``): λ is :class:`~raymeta.metalearn.pruning.PruningNet`
with hard Gumbel keep weights; an EMA teacher of θ is updated after every base step
and checkpointed; the Gumbel noise is re-seeded from (seed, rank, step) before each
base step. Deterministic keep scores are averaged over :func:`pruning_score_steps`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raymeta.config import SamaJobConfig
from raymeta.errors import TrainingSetupError
from raymeta.metalearn.models import AutocastForward, build_model
from raymeta.metalearn.optim import build_optimizer
from raymeta.metalearn.problem import trainable_parameters, validate_problem
from raymeta.metalearn.pruning import PruningProblem, ema_update_, pruning_scores
from raymeta.metalearn.reweighting import example_weights
from raymeta.metalearn.sama import check_optimizer_supported, sama_hypergradient
from raymeta.training import collectives
from raymeta.training.checkpointing import TrainingState
from raymeta.training.sama_setup import (
    derive_seed,
    make_problem,
    worker_data,
)
from raymeta.training.skeleton import WorkerContext

__all__ = ["SCORE_WINDOW", "SamaProgram", "check_stop_hook", "pruning_score_steps"]

SCORE_WINDOW = 0.25  # pruning scores are averaged over evaluations in this tail


def pruning_score_steps(cfg: SamaJobConfig) -> list[int]:
    """Steps whose deterministic pruning scores are averaged into the final scores.

    The evaluation steps (multiples of ``eval_every``) in the last
    ``SCORE_WINDOW`` of training, and always the final step.
    """
    start = cfg.steps * (1.0 - SCORE_WINDOW)
    steps = range(cfg.eval_every, cfg.steps + 1, cfg.eval_every)
    return sorted({s for s in steps if s > start} | {cfg.steps})


def check_stop_hook(cfg: SamaJobConfig, hooks: dict[str, Any]) -> None:
    """``stop_at_step`` must name a meta step (it stops before the meta all-reduce)."""
    stop = hooks.get("stop_at_step")
    if stop is None:
        return
    if cfg.application == "plain" or stop % cfg.unroll_steps or not 0 < stop:
        raise TrainingSetupError(
            f"stop_at_step must be a meta step (a positive multiple of unroll_steps="
            f"{cfg.unroll_steps}, application != 'plain'), got {stop}"
        )


def _sample(
    arrays: tuple[torch.Tensor, ...],
    size: int,
    generator: torch.Generator,
    shard: tuple[int, int],
    device: torch.device,
) -> tuple[torch.Tensor, ...]:
    """A batch drawn with replacement from the shard ``rows[rank::world]``."""
    rank, world = shard
    rows = torch.arange(arrays[0].shape[0])[rank::world]
    pick = rows[torch.randint(rows.numel(), (size,), generator=generator)]
    return tuple(a[pick].to(device) for a in arrays)


class SamaProgram:
    """One worker's SAMA run (see the module docstring)."""

    def __init__(self, ctx: WorkerContext, *, wrap: Any = None) -> None:
        """Build data, model, meta module, problem and optimizers on this worker.

        Args:
            ctx: The worker context.
            wrap: Wraps the model for data parallelism (default: Ray's
                ``prepare_model`` with 2+ workers in Ray, else identity).
        """
        cfg: SamaJobConfig = ctx.cfg
        check_stop_hook(cfg, ctx.hooks)
        self.ctx, self.cfg = ctx, cfg
        self.method = f"{cfg.application}:{cfg.data.train_set}"
        self.data, self.pool, self.sharded = worker_data(ctx)
        model = build_model(
            cfg.model,
            in_shape=tuple(self.data.x_train.shape[1:]),
            out_features=self.data.num_classes,
            seed=derive_seed(cfg.seed, 0),
        ).to(ctx.device)
        if cfg.model.precision == "bf16":
            model = AutocastForward(model, device_type=ctx.device.type)
        self.model = model
        self.problem, meta = make_problem(cfg, model)
        self.meta = meta.to(ctx.device)
        self.opt = build_optimizer(cfg.optim, model.parameters())
        if cfg.application != "plain" and cfg.adaptation == "auto":
            check_optimizer_supported(self.opt)
        self.meta_opt = torch.optim.Adam(self.meta.parameters(), lr=cfg.meta_lr)
        self.net = (wrap or _default_wrap(ctx))(model)
        modules = {"base": model, "meta": self.meta}
        if isinstance(self.problem, PruningProblem):
            modules["teacher"] = self.problem.teacher
        self.state = TrainingState(
            modules=modules,
            optimizers={"base": self.opt, "meta": self.meta_opt},
            generators={
                name: torch.Generator().manual_seed(derive_seed(cfg.seed, i, ctx.rank))
                for i, name in ((2, "base_batches"), (3, "meta_batches"))
            },
        )
        score = cfg.application == "prune"
        self.score_steps = set(pruning_score_steps(cfg)) if score else set()

    # ------------------------------------------------------------------ protocol

    def start(self, *, restored: bool) -> None:
        """Validate the problem on a fresh run (restored runs were validated)."""
        if not restored:
            self.validate()

    def validate(self) -> None:
        """Check batch structures and that λ reaches the base loss."""
        if self.cfg.application == "plain":
            return
        probe = torch.Generator().manual_seed(0)
        base = _sample(self.pool, 2, probe, self._shard(), self.ctx.device)
        meta = _sample(self._meta_arrays(), 2, probe, (0, 1), self.ctx.device)
        validate_problem(self.problem, self.model, self.meta, base, meta)

    def step(self, step: int) -> dict[str, float]:
        """One base step, a meta step every ``unroll_steps``, evaluation when due."""
        cfg, gens = self.cfg, self.state.generators
        batch = _sample(
            self.pool,
            cfg.batch_size,
            gens["base_batches"],
            self._shard(),
            self.ctx.device,
        )
        metrics = {"base_loss": self._base_step(batch, step)}
        if cfg.application != "plain" and step % cfg.unroll_steps == 0:
            meta_batch = _sample(
                self._meta_arrays(),
                cfg.meta_batch_size,
                gens["meta_batches"],
                (0, 1),
                self.ctx.device,
            )
            metrics.update(self._meta_step(batch, meta_batch, step))
        self.state.cursor = {"samples_seen": step * cfg.batch_size}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics.update(self.evaluate())
        if step in self.score_steps:
            self._accumulate_scores()
        metrics["meta_grad_collectives"] = collectives.COUNTER["meta_grad"]
        metrics["meta_steps"] = self.state.extra.get("meta_steps", 0)
        return metrics

    def check_replicas(self) -> None:
        """θ and λ must be bit-identical on every rank."""
        for what, module in (("base", self.model), ("meta", self.meta)):
            collectives.assert_identical_across_ranks(
                list(module.parameters()), what=f"{what} parameters"
            )

    def take_rows(self) -> dict[str, list[dict[str, Any]]]:
        """SAMA's incremental rows are its reported metrics (the runner's)."""
        return {}

    def summary(self) -> dict[str, Any]:
        """Final accuracies, per-example weights (all ranks' shards), parameters."""
        final = self.evaluate()
        extra = self.state.extra
        weights, labels, observed, noisy, ids = self._gathered_weights()
        return {
            "test_acc": final["test_acc"],
            "meta_acc": final["meta_acc"],
            "best_meta_acc": extra.get("best_meta_acc"),
            "test_acc_at_best_meta": extra.get("test_acc_at_best_meta"),
            "weights": weights,
            "is_noisy": noisy,
            "labels": labels,
            "observed_labels": observed,
            "example_ids": ids,
            "base_params": _flat_numpy(self.model),
            "meta_params": _flat_numpy(self.meta),
            "meta_steps": extra.get("meta_steps", 0),
            "meta_grad_collectives_this_attempt": collectives.COUNTER["meta_grad"],
            "samples_per_s": None,
        }

    def final_rows(self, summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Summary figures (``metrics``) and final weights (``data_weights``)."""
        from raymeta.training.results import sama_final_rows

        summary["samples_per_s"] = self.samples_per_s(summary)
        return sama_final_rows(summary, method=self.method)

    # ------------------------------------------------------------------ pieces

    def samples_per_s(self, summary: dict[str, Any]) -> float | None:
        """Training throughput of this attempt; None when it ran no step."""
        steps = summary["steps"] - (summary["restored_from_step"] or 0)
        if steps <= 0:
            return None
        seconds = max(summary["loop_seconds"], 1e-9)
        return steps * self.cfg.batch_size * self.ctx.world / seconds

    def _shard(self) -> tuple[int, int]:
        return (0, 1) if self.sharded else (self.ctx.rank, self.ctx.world)

    def _meta_arrays(self) -> tuple[torch.Tensor, ...]:
        if self.cfg.application == "prune":
            return self.pool  # the training set is the meta set
        d = self.data
        return d.x_meta, d.y_meta, torch.arange(d.x_meta.shape[0])

    def _base_step(self, batch: tuple[torch.Tensor, ...], step: int) -> float:
        pruning = isinstance(self.problem, PruningProblem)
        if (
            pruning
        ):  # fresh Gumbel noise per (seed, rank, step), shared by the meta step
            self.problem.noise_seed = derive_seed(self.cfg.seed, 4, self.ctx.rank, step)
        self.meta.requires_grad_(False)
        try:
            loss = self.problem.base_loss(self.net, self.meta, batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            self.meta.requires_grad_(True)
        self.opt.step()
        if pruning:
            ema_update_(self.problem.teacher, self.model)
        return float(loss.detach())

    def _meta_step(
        self,
        base_batch: tuple[torch.Tensor, ...],
        meta_batch: tuple[torch.Tensor, ...],
        step: int,
    ) -> dict[str, float]:
        cfg = self.cfg
        result = sama_hypergradient(
            self.problem,
            self.model,
            self.meta,
            base_batch,
            meta_batch,
            self.opt,
            radius=cfg.radius,
            adaptation=cfg.adaptation,
            cache_stop_grad=cfg.cache_stop_grad,
            optimizer_steps=step,
        )
        local = [g.clone() for g in result.grads]
        self.ctx.stop_hook(step)
        collectives.all_reduce_mean_(result.grads, tag="meta_grad")
        if "debug_dir" in self.ctx.hooks and self.state.extra.get("meta_steps", 0) == 0:
            self._dump_meta_step(base_batch, meta_batch, local, result.grads)
        for p, g in zip(trainable_parameters(self.meta), result.grads):
            p.grad = g
        self.meta_opt.step()
        self.meta_opt.zero_grad(set_to_none=True)
        self.state.extra["meta_steps"] = self.state.extra.get("meta_steps", 0) + 1
        return {"meta_loss": float(result.meta_loss), "epsilon": result.epsilon}

    def _dump_meta_step(self, base_batch, meta_batch, local, reduced) -> None:
        path = Path(self.ctx.hooks["debug_dir"]) / f"meta_step_rank{self.ctx.rank}.pt"
        torch.save(
            {
                "model": self.model.state_dict(),
                "meta": self.meta.state_dict(),
                "opt": self.opt.state_dict(),
                "last_grads": [p.grad.clone() for p in self.model.parameters()],
                "base_batch": base_batch,
                "meta_batch": meta_batch,
                "local": local,
                "reduced": [g.clone() for g in reduced],
            },
            path,
        )

    def evaluate(self) -> dict[str, float]:
        """Test and meta accuracy; tracks the test accuracy at the best meta one."""
        d, dev = self.data, self.ctx.device
        test = _accuracy(self.model, d.x_test.to(dev), d.y_test.to(dev))
        meta = _accuracy(self.model, d.x_meta.to(dev), d.y_meta.to(dev))
        extra = self.state.extra
        if meta > extra.get("best_meta_acc", -1.0):
            extra["best_meta_acc"], extra["test_acc_at_best_meta"] = meta, test
        return {"test_acc": test, "meta_acc": meta}

    def _accumulate_scores(self) -> None:
        x, y = (
            self.data.x_train.to(self.ctx.device),
            self.data.y_train.to(self.ctx.device),
        )
        scores = pruning_scores(self.model, self.problem.teacher, self.meta, x, y)
        extra = self.state.extra
        total = extra.get("score_sum", torch.zeros(x.shape[0], dtype=torch.float64))
        extra["score_sum"] = total + scores.double().cpu()
        extra["score_count"] = extra.get("score_count", 0) + 1

    def _local_weights(self) -> torch.Tensor:
        d, dev = self.data, self.ctx.device
        if self.cfg.application == "prune":
            extra = self.state.extra
            return (extra["score_sum"] / extra["score_count"]).float()
        return example_weights(
            self.model, self.meta, d.x_train.to(dev), d.y_train.to(dev)
        ).cpu()

    def _gathered_weights(self) -> tuple[np.ndarray, ...]:
        """Per-example (weight, label, observed, noisy, id) over the training set."""
        d = self.data
        local = (
            self._local_weights().double().numpy(),
            d.y_train_true.numpy(),
            d.y_train.numpy(),
            d.is_noisy.numpy(),
            d.train_ids.numpy(),
        )
        if not self.sharded:
            return local
        parts = collectives.all_gather_objects(local)
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(5))


def _default_wrap(ctx: WorkerContext) -> Any:
    if not ctx.in_ray:
        return lambda m: m
    import ray.train.torch

    return lambda m: ray.train.torch.prepare_model(m, move_to_device=False)


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if not len(y):
        return math.nan
    was = model.training
    model.eval()
    try:
        return float((model(x).argmax(-1) == y).double().mean())
    finally:
        model.train(was)


def _flat_numpy(module: torch.nn.Module) -> np.ndarray:
    return (
        torch.cat([p.detach().reshape(-1) for p in module.parameters()]).cpu().numpy()
    )
