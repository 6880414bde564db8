"""HeTRoM as a :class:`~raymeta.training.skeleton.WorkerProgram`, and its builders.

- :func:`build_hetrom_components` turns a :class:`~raymeta.config.HeTRoMConfig`
  into the meta-learner (backbone plus linear / ProtoNet / ANIL / MAML adaptation,
  :mod:`raymeta.metalearn.learners`), objective, optimizer and episode streams
  (built-in task families, or the user's labelled data:
  :func:`raymeta.tasks.labelled.labelled_families`).
- :class:`HeTRoMProgram`: every rank draws its slice of the global meta-batch, all
  ranks all-gather the detached task losses, indices and kinds (one collective),
  select identically, backpropagate the rescaled band loss and average gradients
  (one flattened all-reduce). λ / λ̂ of the dual rule come from the same gathered
  losses on every rank, so they stay identical; they are checkpointed with the
  model, the optimizer and the step (episode streams are pure functions of the
  step). Its rows are the
  per-task ``task_stats`` of every step.
- :func:`train_hetrom_in_process` runs the same meta step without Ray.

Step ``s`` (1-based) trains on the stream's batch ``s - 1``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import torch

from raymeta.config import HeTRoMConfig
from raymeta.metalearn.hetrom import (
    NormalizedMLP,
    RobustTaskObjective,
    StepRecord,
    build_selection_rule,
    evaluate_episodic,
    hetrom_meta_step,
    normalize_embedding,
)
from raymeta.metalearn.learners import EpisodicLearner, build_learner
from raymeta.metalearn.models import AutocastForward, build_model
from raymeta.metalearn.optim import build_optimizer
from raymeta.tasks.fewshot import (
    TASK_FAMILIES,
    EpisodeStream,
    TaskFamily,
    build_task_family,
)
from raymeta.tasks.labelled import labelled_families
from raymeta.training import collectives
from raymeta.training.checkpointing import TrainingState
from raymeta.training.skeleton import WorkerContext

__all__ = [
    "DistributedCollectives",
    "HeTRoMComponents",
    "HeTRoMProgram",
    "Normalized",
    "build_hetrom_components",
    "evaluate_components",
    "train_hetrom_in_process",
]


@dataclasses.dataclass
class HeTRoMComponents:
    """Everything one HeTRoM run trains and evaluates with."""

    learner: EpisodicLearner
    objective: RobustTaskObjective
    optimizer: torch.optim.Optimizer
    train_stream: EpisodeStream
    test_stream: EpisodeStream


class Normalized(torch.nn.Module):
    """An embedding module, L2-normalised and scaled (as :class:`NormalizedMLP`)."""

    def __init__(self, module: torch.nn.Module, scale: float) -> None:
        """Wrap ``module``; every output row gets norm ``scale``."""
        super().__init__()
        self.inner, self.scale = module, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed and normalise the last dimension."""
        return normalize_embedding(self.inner(x), self.scale)


def _rule_kwargs(cfg: HeTRoMConfig) -> dict[str, Any]:
    return {
        "plain": {},
        "oracle": {},
        "sort": {"m": cfg.m, "k": cfg.k},
        "dual": {
            "m": cfg.m,
            "k": cfg.k,
            "n": cfg.tasks_per_batch,
            "lr": cfg.threshold_lr,
        },
        "lognormal": {"c_hi": cfg.c_hi, "c_lo": cfg.c_lo},
    }[cfg.rule]


def _families(cfg: HeTRoMConfig, data: Any) -> tuple[TaskFamily, TaskFamily]:
    if data is None and cfg.data.dataset in TASK_FAMILIES:
        kwargs: dict[str, Any] = {"shots": cfg.data.shots, "queries": cfg.data.queries}
        if cfg.data.dataset != "sinusoid":
            kwargs["ways"] = cfg.data.ways
        kwargs |= cfg.data.kwargs
        builder = TASK_FAMILIES[cfg.data.dataset]
        if "split" not in inspect.signature(builder).parameters:
            family = build_task_family(cfg.data.dataset, **kwargs)
            return family, family
        # families with splits: meta-train on "train", test on held-out "test" classes
        return tuple(  # type: ignore[return-value]
            build_task_family(cfg.data.dataset, **(kwargs | {"split": split}))
            for split in ("train", "test")
        )
    if data is None:
        from raymeta.tasks.sources import load_user_data

        data = load_user_data(cfg.data)
    return labelled_families(cfg.data, data, seed=cfg.seed)


def _backbone(cfg: HeTRoMConfig, family: TaskFamily) -> torch.nn.Module:
    """The embedding (L2-normalised for built-ins) or, for MAML, the whole network."""
    in_features = int(getattr(family, "in_features", 1))
    if cfg.learner == "maml":  # the network's outputs are the task's logits
        out = int(getattr(family, "ways", 1))
        return build_model(
            cfg.model, in_shape=(in_features,), out_features=out, seed=cfg.seed
        )
    if cfg.model.factory == "mlp":
        return NormalizedMLP(
            in_features,
            hidden=cfg.model.hidden,
            out_features=cfg.embedding_dim,
            scale=cfg.embedding_scale,
            generator=torch.Generator().manual_seed(cfg.seed),
        ).to(getattr(torch, cfg.model.dtype))
    model = build_model(
        cfg.model,
        in_shape=(in_features,),
        out_features=cfg.embedding_dim,
        seed=cfg.seed,
    )
    return (
        Normalized(model, cfg.embedding_scale)
        if cfg.model.factory in ("cnn", "conv4", "resnet12")
        else model
    )


def build_hetrom_components(cfg: HeTRoMConfig, data: Any = None) -> HeTRoMComponents:
    """Build the learner, objective, optimizer and streams from a config.

    Args:
        cfg: The run's config.
        data: The user's labelled data (else the ``[data]`` section's).

    The backbone is initialised from ``cfg.seed`` (identical on every rank); the
    training stream carries the configured contamination, the test stream (stream
    id 1) is clean.
    """
    train_family, test_family = _families(cfg, data)
    backbone = _backbone(cfg, train_family)
    if cfg.model.precision == "bf16":
        backbone = AutocastForward(backbone)
    learner = build_learner(
        cfg.learner,
        backbone,
        ways=getattr(train_family, "ways", 1),
        steps=cfg.inner_steps,
        lr=cfg.inner_lr,
        l2=cfg.l2,
        first_order=cfg.first_order,
        problem=getattr(train_family, "problem", "classification"),
        embedding_dim=cfg.embedding_dim,
    )
    d = cfg.data
    train = EpisodeStream(
        family=train_family,
        tasks_per_batch=cfg.tasks_per_batch,
        seed=cfg.seed,
        noisy_fraction=d.noisy_fraction,
        outlier_fraction=d.outlier_fraction,
        noise_prob=d.noise_prob,
        easy_fraction=d.easy_fraction,
    )
    test = EpisodeStream(
        family=test_family, tasks_per_batch=cfg.test_batch, seed=cfg.seed, stream=1
    )
    rule = build_selection_rule(cfg.rule, **_rule_kwargs(cfg))
    return HeTRoMComponents(
        learner=learner,
        objective=RobustTaskObjective(rule, warmup_steps=cfg.warmup_steps),
        optimizer=build_optimizer(cfg.optim, learner.parameters()),
        train_stream=train,
        test_stream=test,
    )


def evaluate_components(c: HeTRoMComponents, *, test_tasks: int) -> tuple[float, float]:
    """Mean metric (accuracy or MSE) and 95% CI over ``test_tasks`` clean tasks."""
    n_batches = max(test_tasks // c.test_stream.tasks_per_batch, 1)
    device = next(c.learner.parameters()).device
    batches = [c.test_stream.batch(i).to(device) for i in range(n_batches)]
    return evaluate_episodic(c.learner, batches)


def train_hetrom_in_process(
    cfg: HeTRoMConfig, *, on_step: Callable[[StepRecord], None] | None = None
) -> HeTRoMComponents:
    """Train in this process (no Ray) with the same meta step as the Ray loop."""
    c = build_hetrom_components(cfg)
    for step in range(cfg.steps):
        record = hetrom_meta_step(
            c.learner, c.objective, c.optimizer, c.train_stream.batch(step)
        )
        if on_step is not None:
            on_step(record)
    return c


class DistributedCollectives:
    """:class:`~raymeta.metalearn.hetrom.Collectives` over ``torch.distributed``."""

    def __init__(self, before_collective: Callable[[], None] = lambda: None) -> None:
        """Read the world size of the active process group (1 if none)."""
        self.world_size = collectives.world_size()
        self.before_collective = before_collective

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's 1-D tensor in rank order."""
        self.before_collective()
        return collectives.all_gather_flat(tensor, tag="hetrom_rank").reshape(-1)

    def all_reduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average gradients across ranks (one flattened all-reduce)."""
        collectives.all_reduce_mean_(tensors, tag="hetrom_grad")


class HeTRoMProgram:
    """One worker's HeTRoM run (see the module docstring)."""

    method = "hetrom"

    def __init__(self, ctx: WorkerContext) -> None:
        """Build the components; user data comes with the loop config."""
        self.ctx, self.cfg = ctx, ctx.cfg
        data = ctx.data.get("labelled")
        self.c = build_hetrom_components(self.cfg, data)
        self.c.learner.to(ctx.device)
        self.state = TrainingState(
            modules={"learner": self.c.learner}, optimizers={"meta": self.c.optimizer}
        )
        self.step_no = 0
        self.comm = DistributedCollectives(lambda: ctx.stop_hook(self.step_no))
        self.rows: list[dict[str, Any]] = []
        self.episodes: list[dict[str, Any]] = []

    def start(self, *, restored: bool) -> None:
        """Read the thresholds back after a restore."""
        if restored:
            self.c.objective.load_state_dict(self.state.extra.get("objective", {}))

    def step(self, step: int) -> dict[str, float]:
        """One meta step on batch ``step - 1`` of the training stream."""
        c, ctx = self.c, self.ctx
        self.step_no = step
        batch = c.train_stream.batch(step - 1, rank=ctx.rank, world_size=ctx.world)
        batch = batch.to(ctx.device)
        record = hetrom_meta_step(
            c.learner, c.objective, c.optimizer, batch, collectives=self.comm
        )
        self.state.extra["objective"] = c.objective.state_dict()
        self.rows += [r | {"step": step} for r in record.task_rows()]
        selected = record.task_index[record.selection.selected].tolist()
        self.episodes.append(
            {"step": step, "selected": selected, "losses": record.losses.tolist()}
        )
        sel = record.selection
        return {
            "band_loss": record.band_loss,
            "num_selected": float(sel.selected.sum()),
            "threshold_upper": sel.threshold_upper,
            "threshold_lower": sel.threshold_lower,
            "ranking_time_s": record.ranking_time_s,
            "step_time_s": record.step_time_s,
        }

    def check_replicas(self) -> None:
        """Parameters and λ / λ̂ must be bit-identical on every rank."""
        scalars = torch.tensor(
            [float(v) for v in self.c.objective.state_dict().values()],
            dtype=torch.float64,
        )
        tensors = [p.detach() for p in self.c.learner.parameters()] + [scalars]
        collectives.assert_identical_across_ranks(
            tensors, what="HeTRoM meta-parameters and lambda/lambda-hat"
        )

    def take_rows(self) -> dict[str, list[dict[str, Any]]]:
        """The ``task_stats`` rows since the last call."""
        rows, self.rows = self.rows, []
        return {"task_stats": rows}

    def summary(self) -> dict[str, Any]:
        """Clean-test metric (rank 0), episodes of this attempt, final parameters."""
        c = self.c
        params = [p.detach() for p in c.learner.parameters()]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        test = (
            evaluate_components(c, test_tasks=self.cfg.test_tasks)
            if self.ctx.rank == 0
            else None
        )
        return {
            "test_metric": None if test is None else test[0],
            "test_ci95": None if test is None else test[1],
            "episodes": self.episodes,
            "params": torch.cat([p.flatten() for p in params]).tolist(),
            "last_grad": torch.cat([g.flatten() for g in grads]).tolist(),
            "objective_state": c.objective.state_dict(),
        }

    def final_rows(self, summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """``summary/test_metric`` and ``summary/test_ci95`` metric rows."""
        from raymeta.training.results import summary_rows

        figures = {
            "test_metric": summary["test_metric"],
            "test_ci95": summary["test_ci95"],
        }
        rows = summary_rows(
            figures,
            method=self.method,
            step=summary["steps"],
            attempt=summary["attempt"],
        )
        return {"metrics": rows}
