"""HeTRoM: ranked-range episodic meta-learning over heterogeneous tasks.

The meta-objective averages the task losses ranked ``m+1..k`` (descending) of a
meta-batch, dropping the ``m`` largest (noisy/outlier tasks) and the ``n-k`` smallest
(easy tasks). Selection rules, all with the same ``select`` interface:

- :class:`PlainAverage` (ERM), :class:`OracleClean` (clean tasks only, uses the
  ground-truth kinds), :func:`top_k` and :func:`trimmed` (special cases of
- :class:`RankedRange` (``"sort"``): exact per-batch sort, ties broken by task index;
- :class:`DualThresholds` (``"dual"``): the two-scalar lambda / lambda-hat streaming
  form, a task is selected iff ``lam < loss < lam + lam_hat``;
- :class:`LogNormalThresholds`: robust log-normal fit (median, 1.4826 MAD) of the
  log-losses; keep ``-c_lo <= (log loss - mu)/sigma <= c_hi``.

:class:`RobustTaskObjective` adds a plain-average warm-up. :func:`hetrom_meta_step`
is one meta-iteration (task losses, global selection through a :class:`Collectives`,
band loss rescaled for gradient averaging, optimizer step); the Ray Train loop and the
in-process benchmark both call it. :class:`NormalizedMLP` is the embedding,
L2-normalised and scaled (without it, unrolled inner loops diverge).

Example:
    >>> import torch
    >>> losses, ids = torch.tensor([3.0, 1.0, 2.0, 0.5]), torch.arange(4)
    >>> RankedRange(m=1, k=3).select(losses, ids).selected.tolist()
    [False, True, True, False]
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from raymeta.errors import SelectionError
from raymeta.metalearn.heads import task_metric
from raymeta.metalearn.learners import EpisodicLearner
from raymeta.tasks.episodes import TASK_KINDS, EpisodeBatch

__all__ = [
    "Collectives",
    "DualThresholds",
    "LocalCollectives",
    "LogNormalThresholds",
    "NormalizedMLP",
    "OracleClean",
    "PlainAverage",
    "RankedRange",
    "RobustTaskObjective",
    "Selection",
    "SelectionRule",
    "StepRecord",
    "band_loss",
    "build_selection_rule",
    "dual_objective",
    "evaluate_episodic",
    "hetrom_meta_step",
    "normalize_embedding",
    "rank_order",
    "ranked_range_sum",
    "selection_quality",
    "top_k",
    "trimmed",
]


# ------------------------------------------------------------- ranking math --------


def rank_order(losses: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
    """Positions of ``losses`` sorted descending; ties broken by ascending task index.

    Args:
        losses: ``B`` task losses (detached).
        task_index: ``B`` int64 unique task indices.

    Returns:
        ``B`` int64 permutation; ``order[0]`` is the largest loss.
    """
    by_id = torch.argsort(task_index, stable=True)
    by_loss = torch.argsort(-losses[by_id], stable=True)
    return by_id[by_loss]


def _check_range(m: int, k: int, n: int | None = None) -> None:
    if not 0 <= m < k:
        raise SelectionError(
            f"ranked range needs 0 <= m < k; got m={m}, k={k}. m counts dropped "
            f"high-loss tasks, k the last kept rank (use k > m)"
        )
    if n is not None and k > n:
        raise SelectionError(
            f"k={k} exceeds the {n} tasks in the meta-batch; use k <= tasks_per_batch"
        )


def ranked_range_sum(losses: torch.Tensor, *, m: int, k: int) -> torch.Tensor:
    """Sum of the losses ranked ``m+1..k`` in descending order (differentiable)."""
    _check_range(m, k, losses.shape[0])
    return torch.sort(losses, descending=True).values[m:k].sum()


def dual_objective(
    losses: torch.Tensor,
    lam: float | torch.Tensor,
    lam_hat: float | torch.Tensor,
    *,
    m: int,
    k: int,
) -> torch.Tensor:
    """Two-scalar saddle function ``G`` whose min-max equals :func:`ranked_range_sum`.

    ``G = (k-m) lam + (n-m) lam_hat - sum_i [lam_hat - [l_i - lam]_+]_+``; the
    saddle point is ``lam = l_[k]``, ``lam_hat = l_[m] - l_[k]``.
    """
    n = losses.shape[0]
    _check_range(m, k, n)
    inner = torch.relu(lam_hat - torch.relu(losses - lam)).sum()
    return (k - m) * lam + (n - m) * lam_hat - inner


# ------------------------------------------------------------- selection rules -----


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which tasks of a meta-batch drive the meta-gradient.

    Attributes:
        selected: ``B`` bool.
        dropped_top: ``B`` bool, dropped for a high loss.
        dropped_bottom: ``B`` bool, dropped for a low loss.
        threshold_upper: Loss above which tasks are dropped (``inf`` if none).
        threshold_lower: Loss below which tasks are dropped (``-inf`` if none).
    """

    selected: torch.Tensor
    dropped_top: torch.Tensor
    dropped_bottom: torch.Tensor
    threshold_upper: float = math.inf
    threshold_lower: float = -math.inf


def _all(losses: torch.Tensor) -> Selection:
    none = torch.zeros_like(losses, dtype=torch.bool)
    return Selection(~none, none, none.clone())


class SelectionRule(Protocol):
    """``select(losses B, task_index B, kind_code B | None) -> Selection``."""

    def select(
        self,
        losses: torch.Tensor,
        task_index: torch.Tensor,
        kind_code: torch.Tensor | None = None,
    ) -> Selection:
        """Select tasks of one (global) meta-batch."""
        ...


@dataclasses.dataclass
class PlainAverage:
    """Every task counts (ERM / MAML objective)."""

    def select(
        self,
        losses: torch.Tensor,
        task_index: torch.Tensor,
        kind_code: torch.Tensor | None = None,
    ) -> Selection:
        """Select all tasks."""
        return _all(losses)


@dataclasses.dataclass
class OracleClean:
    """Only ground-truth clean tasks count (needs ``kind_code``)."""

    def select(
        self,
        losses: torch.Tensor,
        task_index: torch.Tensor,
        kind_code: torch.Tensor | None = None,
    ) -> Selection:
        """Select tasks whose kind is ``clean``."""
        if kind_code is None:
            raise SelectionError("the oracle needs ground-truth task kinds; got none")
        clean = kind_code == TASK_KINDS.index("clean")
        return Selection(clean, ~clean, torch.zeros_like(clean))


@dataclasses.dataclass
class RankedRange:
    """Exact per-batch ranked range: keep ranks ``m+1..k`` (descending losses).

    ``m=0, k=B`` is the plain average, ``m=0`` top-k, ``k=B`` the trimmed mean,
    ``k=m+1`` a single ranked loss. Ties break by ascending task index.
    """

    m: int
    k: int

    def __post_init__(self) -> None:
        """Validate ``0 <= m < k``."""
        _check_range(self.m, self.k)

    def select(
        self,
        losses: torch.Tensor,
        task_index: torch.Tensor,
        kind_code: torch.Tensor | None = None,
    ) -> Selection:
        """Select by sorting; raises SelectionError if ``k`` exceeds the batch."""
        _check_range(self.m, self.k, losses.shape[0])
        order = rank_order(losses, task_index)
        masks = [torch.zeros_like(losses, dtype=torch.bool) for _ in range(3)]
        for mask, part in zip(
            masks, (order[self.m : self.k], order[: self.m], order[self.k :])
        ):
            mask[part] = True
        upper = float(losses[order[self.m - 1]]) if self.m else math.inf
        lower = float(losses[order[self.k]]) if self.k < len(order) else -math.inf
        return Selection(*masks, threshold_upper=upper, threshold_lower=lower)


def top_k(k: int) -> RankedRange:
    """Average of the ``k`` largest losses (ATk)."""
    return RankedRange(m=0, k=k)


def trimmed(m: int, tasks_per_batch: int) -> RankedRange:
    """Trimmed mean: drop the ``m`` largest of ``tasks_per_batch`` losses."""
    return RankedRange(m=m, k=tasks_per_batch)


def _between(ranked: torch.Tensor, i: int) -> float:
    """Midpoint of the ``i``-th and ``i+1``-th largest of descending ``ranked``."""
    return 0.5 * (float(ranked[i - 1]) + float(ranked[i]))


def _below(x: float) -> float:
    return x - 1e-9 * max(1.0, abs(x))


def _above(x: float) -> float:
    return x + 1e-9 * max(1.0, abs(x))


@dataclasses.dataclass
class DualThresholds:
    """Two-scalar streaming form: band ``(lam, lam + lam_hat)`` tracked by SGD.

    ``lam`` tracks the upper-``k/n`` quantile of task losses and ``lam + lam_hat``
    the upper-``m/n`` quantile. Both start from the first batch they see
    (``lam = l_[k]``, ``lam_hat = l_[m] - l_[k]``) and are plain floats, so every
    rank that sees the same global losses holds the same values.

    Args:
        m: Dropped high-loss count per ``n`` tasks.
        k: Last kept rank per ``n`` tasks.
        n: Reference batch size (the meta-batch size).
        lr: Step size of both scalars (in loss units).
    """

    m: int
    k: int
    n: int
    lr: float = 0.02
    lam: float = math.nan
    lam_hat: float = math.nan

    def __post_init__(self) -> None:
        """Validate ``0 <= m < k <= n`` and ``lr > 0``."""
        _check_range(self.m, self.k, self.n)
        if self.lr <= 0:
            raise SelectionError(f"threshold lr must be > 0, got {self.lr}")

    def _initialise(self, losses: torch.Tensor) -> None:
        """Thresholds between ranked losses, so the first band holds k - m tasks.

        Both comparisons are strict (``lam < loss < lam + lam_hat``), so each
        threshold sits halfway between the last kept and the first dropped loss
        (below the smallest / above the largest when nothing is dropped there).
        """
        ranked = torch.sort(losses, descending=True).values.double()
        b = len(ranked)
        kb = min(b, max(1, round(b * self.k / self.n)))
        mb = round(b * self.m / self.n)
        self.lam = _between(ranked, kb) if kb < b else _below(float(ranked[-1]))
        top = _between(ranked, mb) if mb else _above(float(ranked[0]))
        self.lam_hat = top - self.lam

    def select(
        self,
        losses: torch.Tensor,
        task_index: torch.Tensor,
        kind_code: torch.Tensor | None = None,
    ) -> Selection:
        """Select inside the current band, then take one step on both scalars."""
        if math.isnan(self.lam):
            self._initialise(losses)
        upper = self.lam + self.lam_hat
        selected = (losses > self.lam) & (losses < upper)
        sel = Selection(selected, losses >= upper, losses <= self.lam, upper, self.lam)
        frac_band = float(selected.double().mean())
        frac_below = float(
            (torch.relu(losses - self.lam) < self.lam_hat).double().mean()
        )
        self.lam -= self.lr * ((self.k - self.m) / self.n - frac_band)
        self.lam_hat += self.lr * ((self.n - self.m) / self.n - frac_below)
        return sel

    def state_dict(self) -> dict[str, float]:
        """The two scalars (checkpointed)."""
        return {"lam": self.lam, "lam_hat": self.lam_hat}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the two scalars."""
        self.lam, self.lam_hat = float(state["lam"]), float(state["lam_hat"])


@dataclasses.dataclass
class LogNormalThresholds:
    """Per-batch robust log-normal fit: keep ``-c_lo <= (z - mu) / sigma <= c_hi``.

    ``z = log loss``, ``mu = median(z)``, ``sigma = 1.4826 * MAD(z)``.

    Assumptions: the clean tasks' losses in a batch are log-normal and they are the
    majority (median and MAD break down at 50% contamination); contaminated tasks
    sit above the clean band. The constants are not learned: ``c_hi = 1`` drops the
    upper 16% of a log-normal clean population by design (``Phi(-1)``), trading
    clean tasks for recall, and ``c_lo = 2.5`` drops about 0.6% at the easy end.
    The evidence behind them is only the Gaussian-cluster and glyph benchmarks in
    the README (``jobs/bench_hetrom.py``), not a derivation.
    """

    c_hi: float = 1.0
    c_lo: float = 2.5

    def __post_init__(self) -> None:
        """Validate the constants."""
        if self.c_hi <= 0 or self.c_lo <= 0:
            raise SelectionError(
                f"c_hi and c_lo must be > 0; got c_hi={self.c_hi}, c_lo={self.c_lo}"
            )

    def select(
        self,
        losses: torch.Tensor,
        task_index: torch.Tensor,
        kind_code: torch.Tensor | None = None,
    ) -> Selection:
        """Select tasks whose log-loss lies inside the robust band."""
        z = torch.log(losses.double().clamp_min(1e-12))
        mu = z.median()
        sigma = (1.4826 * (z - mu).abs().median()).clamp_min(1e-12)
        upper, lower = (
            float(torch.exp(mu + self.c_hi * sigma)),
            float(torch.exp(mu - self.c_lo * sigma)),
        )
        top, bottom = losses > upper, losses < lower
        return Selection(~(top | bottom), top, bottom, upper, lower)


_RULES: dict[str, Callable[..., Any]] = {
    "plain": PlainAverage,
    "oracle": OracleClean,
    "sort": RankedRange,
    "dual": DualThresholds,
    "lognormal": LogNormalThresholds,
}


def build_selection_rule(name: str, **kwargs: Any) -> SelectionRule:
    """Build a rule by name: plain, oracle, sort (m, k), dual (m, k, n, lr), lognormal.

    Raises:
        SelectionError: Unknown name (lists the valid ones) or bad arguments.
    """
    if name not in _RULES:
        raise SelectionError(
            f"unknown selection rule {name!r}; expected one of {sorted(_RULES)}"
        )
    return _RULES[name](**kwargs)


@dataclasses.dataclass
class RobustTaskObjective:
    """A selection rule with a plain-average warm-up of ``warmup_steps`` steps."""

    rule: SelectionRule
    warmup_steps: int = 0

    def select(
        self,
        losses: torch.Tensor,
        task_index: torch.Tensor,
        kind_code: torch.Tensor | None = None,
        *,
        step: int,
    ) -> Selection:
        """Plain average before ``warmup_steps``, the rule afterwards."""
        if step < self.warmup_steps:
            return _all(losses)
        return self.rule.select(losses, task_index, kind_code)

    def state_dict(self) -> dict[str, Any]:
        """State of a stateful rule (the dual scalars), else empty."""
        get = getattr(self.rule, "state_dict", None)
        return dict(get()) if get else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            self.rule.load_state_dict(state)  # type: ignore[attr-defined]


def band_loss(
    local_losses: torch.Tensor,
    local_selected: torch.Tensor,
    *,
    num_selected: int,
    world_size: int = 1,
) -> torch.Tensor:
    """Loss to backpropagate on one rank so the averaged gradient is the band mean.

    Returns ``(world_size / |S|) * sum_{i in S, local} l_i``; averaging the gradients
    over ``world_size`` ranks gives the gradient of ``mean_{i in S} l_i``. An empty
    band yields a zero loss that still reaches every parameter.
    """
    scale = world_size / max(num_selected, 1)
    return scale * (local_losses * local_selected.to(local_losses)).sum()


def selection_quality(
    dropped_top: torch.Tensor, kind_code: torch.Tensor
) -> tuple[float, float]:
    """Precision and recall of the dropped-top set against noisy and outlier tasks."""
    bad = (kind_code == TASK_KINDS.index("noisy")) | (
        kind_code == TASK_KINDS.index("outlier")
    )
    hits = float((dropped_top & bad).sum())
    precision = hits / max(float(dropped_top.sum()), 1.0)
    recall = hits / max(float(bad.sum()), 1.0)
    return precision, recall


# ------------------------------------------------------------- model + step --------


def normalize_embedding(z: torch.Tensor, scale: float) -> torch.Tensor:
    """L2-normalise the last dimension and multiply by ``scale``."""
    return scale * nn.functional.normalize(z, dim=-1)


class NormalizedMLP(nn.Module):
    """MLP embedding ``F -> hidden... -> out_features``, L2-normalised times ``scale``.

    Args:
        in_features: Input dimension ``F``.
        hidden: Hidden widths.
        out_features: Embedding dimension ``D``.
        scale: Norm of every embedding.
        generator: Initialisation generator (no global RNG).
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden: Sequence[int] = (64, 64),
        out_features: int = 32,
        scale: float = 4.0,
        generator: torch.Generator | None = None,
    ) -> None:
        """Build the layers and initialise them from ``generator``."""
        super().__init__()
        widths = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])
        self.scale = scale
        gen = generator or torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                bound = 1.0 / math.sqrt(p.shape[-1]) if p.ndim > 1 else 0.05
                p.uniform_(-bound, bound, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``... x F`` to ``... x D`` with norm ``scale``."""
        return normalize_embedding(self.net(x), self.scale)


class Collectives(Protocol):
    """Cross-rank operations a meta step needs (identity on one process)."""

    world_size: int

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's 1-D ``tensor`` in rank order."""
        ...

    def all_reduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` across ranks in place."""
        ...


class LocalCollectives:
    """Single-process :class:`Collectives` (no-ops)."""

    world_size = 1

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return ``tensor``."""
        return tensor

    def all_reduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Nothing to average."""


@dataclasses.dataclass(frozen=True)
class StepRecord:
    """What one meta-iteration did, over the global meta-batch.

    Attributes:
        step: Meta-iteration.
        losses: ``B`` float64 task losses (all ranks, rank order).
        task_index: ``B`` int64.
        kind_code: ``B`` int64.
        selection: The :class:`Selection` over the global batch.
        band_loss: Mean loss over the selected band.
        ranking_time_s: Seconds spent gathering and selecting.
        step_time_s: Seconds of the whole meta step.
    """

    step: int
    losses: torch.Tensor
    task_index: torch.Tensor
    kind_code: torch.Tensor
    selection: Selection
    band_loss: float
    ranking_time_s: float
    step_time_s: float

    def task_rows(self) -> list[dict[str, Any]]:
        """One ``task_stats`` row per task (without experiment/run_id)."""
        sel = self.selection
        ranks = torch.empty_like(self.task_index)
        ranks[rank_order(self.losses, self.task_index)] = torch.arange(len(ranks))
        rows = []
        for i in range(len(self.losses)):
            dropped = (
                "top"
                if sel.dropped_top[i]
                else ("bottom" if sel.dropped_bottom[i] else "none")
            )
            rows.append(
                {
                    "step": self.step,
                    "task_id": f"{self.step}-{int(self.task_index[i])}",
                    "task_kind": TASK_KINDS[int(self.kind_code[i])],
                    "loss": float(self.losses[i]),
                    "rank_in_batch": int(ranks[i]),
                    "selected": bool(sel.selected[i]),
                    "dropped": dropped,
                    "threshold_upper": sel.threshold_upper,
                    "threshold_lower": sel.threshold_lower,
                }
            )
        return rows


def _gather_tasks(
    comm: Collectives, losses: torch.Tensor, batch: EpisodeBatch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every rank's (loss, task index, kind) with **one** all-gather.

    The three columns travel as one float64 ``T x 3`` block (indices and kind codes
    are small integers, exact in float64).
    """
    index, kind = batch.task_index, batch.kind_code
    local = torch.stack(
        [
            losses.detach().double(),
            index.double().to(losses.device),
            kind.double().to(losses.device),
        ],
        dim=1,
    )
    rows = comm.all_gather(local.reshape(-1)).reshape(-1, 3).cpu()
    return rows[:, 0], rows[:, 1].long(), rows[:, 2].long()


def hetrom_meta_step(
    learner: EpisodicLearner,
    objective: RobustTaskObjective,
    optimizer: torch.optim.Optimizer,
    batch: EpisodeBatch,
    *,
    collectives: Collectives | None = None,
) -> StepRecord:
    """One HeTRoM meta-iteration on this rank's share of a global meta-batch.

    Computes the local task losses, gathers the detached losses, task indices and
    kinds of all ranks, selects identically everywhere, backpropagates
    :func:`band_loss`, averages the gradients across ranks and steps ``optimizer``.

    Args:
        learner: The meta-learner (not DDP-wrapped; gradients are averaged here),
            e.g. from :func:`~raymeta.metalearn.learners.build_learner`.
        objective: Selection rule plus warm-up.
        optimizer: Over ``learner.parameters()``.
        batch: This rank's tasks.
        collectives: Cross-rank operations; :class:`LocalCollectives` if ``None``.
    """
    comm = collectives or LocalCollectives()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=False)
    losses = learner.task_losses(batch)
    rank_start = time.perf_counter()
    g_losses, g_index, g_kind = _gather_tasks(comm, losses, batch)
    sel = objective.select(g_losses, g_index, g_kind, step=batch.step)
    is_local = batch.task_index.unsqueeze(1) == g_index.unsqueeze(0)  # T x B
    local_selected = (is_local & sel.selected.unsqueeze(0)).any(1)
    n_sel = int(sel.selected.sum())
    ranking_time = time.perf_counter() - rank_start
    band = band_loss(
        losses, local_selected, num_selected=n_sel, world_size=comm.world_size
    )
    band.backward()
    params = [p for p in learner.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    comm.all_reduce_mean_([p.grad for p in params])
    optimizer.step()
    band_mean = float((g_losses * sel.selected).sum()) / max(n_sel, 1)
    return StepRecord(
        step=batch.step,
        losses=g_losses,
        task_index=g_index,
        kind_code=g_kind,
        selection=sel,
        band_loss=band_mean,
        ranking_time_s=ranking_time,
        step_time_s=time.perf_counter() - start,
    )


def evaluate_episodic(
    learner: EpisodicLearner, batches: Sequence[EpisodeBatch]
) -> tuple[float, float]:
    """Mean per-task metric and its 95% CI half-width over test batches.

    The metric is accuracy for classification and MSE for regression. The
    meta-parameters stay fixed; each task adapts as in training.

    Returns:
        ``(mean, 1.96 * std / sqrt(num_tasks))``.
    """
    values = []
    for batch in batches:
        out = learner.predict(batch)
        values.append(task_metric(out, batch.query_y, learner.problem))
    v = torch.cat(values).double().cpu().numpy()
    return float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(len(v)))
