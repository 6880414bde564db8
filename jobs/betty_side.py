"""Betty's SAMA side of the raymeta-vs-Betty benchmark, plus the harness helpers.

This file runs in a throwaway venv that holds Betty (``betty-ml==0.2.1``) and not
raymeta, so it imports neither raymeta nor, at module level, Betty: the driver
``jobs/bench_sama_betty.py`` (repo venv) imports its helpers (problem file, MLP,
peak-memory probe, accuracy) so that both sides measure the same way.

Reproduce (the driver calls this file; nothing needs to be run by hand)::

    python3 -m venv /tmp/betty-venv
    /tmp/betty-venv/bin/pip install torch==2.13.0 numpy scikit-learn
    /tmp/betty-venv/bin/pip install --ignore-requires-python betty-ml==0.2.1
    .venv/bin/python jobs/bench_sama_betty.py \
        --betty-python /tmp/betty-venv/bin/python --steps 300 --seeds 3 \
        --out /tmp/betty-bench

    # the two modes the driver runs, by hand:
    /tmp/betty-venv/bin/python jobs/betty_side.py train \
        --problem /tmp/betty-bench/problems/seed0.pt --result r.json --alpha 0.01
    /tmp/betty-venv/bin/python jobs/betty_side.py probe \
        --problem /tmp/betty-bench/problems/seed0.pt \
        --snapshots /tmp/betty-bench/snapshots/seed0 --result p.pt

How Betty is driven (read from betty 0.2.1: ``hypergradient/sama.py``,
``hypergradient/utils.py``, ``problems/problem.py``, ``engine.py``):

* Two ``ImplicitProblem`` s: ``classifier`` (θ, base Adam, ``Config(type="sama",
  sama_adam_alpha=R)``) and ``reweight`` (λ, meta Adam, ``Config(unroll_steps=1)``),
  ``dependencies={"u2l": {reweight: [classifier]}, "l2u": {classifier:
  [reweight]}}``, run by ``Engine.run()`` for S iterations. Their "data loaders"
  are lists of the pre-drawn batches of the problem file, so Betty sees exactly the
  batch schedule raymeta sees (Betty calls ``iter()``/``next()`` on them).
* Per iteration Betty does a base step (``classifier.one_step_descent``: weighted
  loss, backward into θ only, Adam step, ``last_grad`` saved in the Adam state),
  then, because ``unroll_steps=1``, a meta step (``reweight.step_normal``: meta loss,
  v = ∇_θ L_meta, ``precondition`` (Adam adaptation), central difference, Adam on λ).
  The meta step is timed by wrapping ``reweight.step_normal``; the base step by
  wrapping ``classifier.one_step_descent``; the hypergradient is read in
  ``reweight.optimizer_step`` (λ.grad just before the meta Adam step). Betty's
  meta-step time includes its own per-step overhead (``get_batch`` for the meta
  batch, ``loss.item()``), which is part of using Betty.
* ``probe`` mode: for each raymeta snapshot (θ, λ, both Adam states before step k)
  a fresh Engine over the one-batch lists of step k takes one iteration, in float32
  and in float64; it records λ.grad, θ after the base step, θ after the meta step
  (Betty's in-place restore error) and Betty's p = D ⊙ v, read by wrapping
  ``betty.hypergradient.sama.precondition`` for that call only.

Betty's SAMA differs from raymeta's (``raymeta/metalearn/sama.py``) as follows:

1. Adam adaptation D (p = D ⊙ v): Betty uses
   ``lr·[(1−β1)β2·s_old − β1(1−β2)·g·m_old]/(√s+ε)³`` (m_old, s_old recovered from
   the post-step moments and ``last_grad``), i.e. ``lr·[(1−β1)s − (1−β2)g·m]/(√s+ε)³``:
   the ε → 0 derivative of the update *without Adam's bias correction*. raymeta
   uses the exact derivative of torch's bias-corrected update,
   ``(lr/c1)·[(1−β1)(q+ε) − (1−β2)m·g/(c2·q)]/(q+ε)²`` with q = √(s/c2), c1 = 1−β1ᵗ,
   c2 = 1−β2ᵗ. Consequences: (a) where q ≫ ε the two are proportional, Betty's
   larger by c1/√c2 (about 4.3 at t = 2, 6.5 at t = 10, 1.96 at t = 300); since
   the central difference estimates M·p (M the mixed second derivative), Betty's
   hypergradient is larger by that factor, same direction; (b) where q ≲ ε
   (coordinates whose gradient has been ~0 so far, e.g. first-layer weights of
   pixels that are blank in the training batches) Betty's D → 0 while raymeta's
   → lr(1−β1)/(c1·ε) ≈ 1e4, so such coordinates can dominate raymeta's p; (c) at
   t = 1 Betty's D is exactly 0 in exact arithmetic (m_old = s_old = 0), so its
   first hypergradient is rounding noise (norm ~1e-18 of raymeta's).
2. Stop-gradient inputs: Betty re-runs ``training_step`` at θ±ε_fd·p, so the
   meta-weight-net reads the detached losses *at the perturbed θ*; raymeta (default
   ``cache_stop_grad=True``) evaluates them once at θ and reuses them. raymeta with
   ``cache_stop_grad=False`` is the same estimator as Betty's (the driver runs it as
   the control variant).
3. Restoring θ: Betty adds ε·p, subtracts 2ε·p, adds ε·p in place (θ comes back with
   rounding error); raymeta copies θ back from a saved copy (bit-exact).
4. Finite-difference step: both use ε_fd = R/||p||₂ (Betty adds 1e-15 to the norm);
   Betty's R is ``Config.sama_adam_alpha`` (default 1.0), raymeta's ``radius``
   (default 1e-2). The benchmark sets both to the same R (and also runs Betty's
   default). Everything else is the same algorithm: base step with Adam on the
   weighted loss (Betty builds the graph through λ but back-propagates into θ only;
   raymeta freezes λ; θ after the base step is bit-identical), v = ∇_θ L_meta on the
   meta batch, central difference on the last base batch, Adam on λ.

Measurement (same on both sides): ``torch.set_num_threads(1)``; wall time by
``time.perf_counter_ns`` and CPU time by ``time.thread_time_ns`` (less sensitive to
other load on the machine) around each step, median over the timed steps (steps after
the warm-up that are neither memory nor probe steps); extra peak memory of a step:
the step runs under ``torch.profiler`` with ``profile_memory=True`` and the peak of
the CPU allocator's running total of bytes allocated during the step (from the
profiler's allocation events) is taken, i.e. the most tensor memory the step held
at once on top of what was live before it (frees of tensors that existed before the
step are not seen, which can only overstate the figure). Only torch tensor memory
counts; Python objects do not.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

T = TypeVar("T")
Batch = tuple[torch.Tensor, torch.Tensor]

# --------------------------------------------------------------------------- shared


class WeightNet(torch.nn.Module):
    """Loss -> weight MLP with the keys and forward of raymeta's ``MetaWeightNet``."""

    def __init__(self, hidden: int) -> None:
        """Build ``1 -> hidden -> 1`` (weights come from a state dict)."""
        super().__init__()
        self.hidden = torch.nn.utils.skip_init(torch.nn.Linear, 1, hidden)
        self.out = torch.nn.utils.skip_init(torch.nn.Linear, hidden, 1)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """Map losses ``(B, 1)`` to weights ``(B, 1)`` in (0, 1)."""
        return torch.sigmoid(self.out(torch.relu(self.hidden(losses))))


def build_mlp(
    sizes: Sequence[int], generator: torch.Generator | None = None
) -> torch.nn.Sequential:
    """Linear/ReLU MLP; ``generator`` draws torch's default init, else uninitialised.

    The init is ``nn.Linear``'s default (weights and biases uniform in ±1/√fan_in)
    drawn from ``generator``; the global RNG is never touched.
    """
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layer = torch.nn.utils.skip_init(torch.nn.Linear, fan_in, fan_out)
        if generator is not None:
            bound = 1.0 / fan_in**0.5
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
        layers += [layer, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def load_problem(path: str | Path) -> dict[str, Any]:
    """Read a problem file written by the driver (settings decoded from JSON)."""
    blob = torch.load(path, weights_only=True)
    blob["settings"] = json.loads(blob["settings"])
    return blob


def make_batches(
    x: torch.Tensor, y: torch.Tensor, schedule: torch.Tensor
) -> list[Batch]:
    """Materialise ``(x[idx], y[idx])`` for each row of an index schedule."""
    return [(x[idx].contiguous(), y[idx].contiguous()) for idx in schedule]


def build_models(
    blob: dict[str, Any], dtype: torch.dtype = torch.float32
) -> tuple[torch.nn.Sequential, WeightNet]:
    """θ and λ modules (in ``dtype``) loaded with a problem's or snapshot's state."""
    settings = blob["settings"]
    model = build_mlp(settings["sizes"]).to(dtype)
    model.load_state_dict(blob["theta"])
    meta = WeightNet(settings["hidden"]).to(dtype)
    meta.load_state_dict(blob["lam"])
    return model, meta


def probe_batches(
    blob: dict[str, Any], step: int, dtype: torch.dtype
) -> tuple[list[Batch], list[Batch]]:
    """The base and meta batch of ``step`` (1-based), features cast to ``dtype``."""
    pairs = []
    for x, y, idx in (
        (blob["x_train"], blob["y_train"], blob["base_idx"]),
        (blob["x_meta"], blob["y_meta"], blob["meta_idx"]),
    ):
        rows = idx[step - 1 : step]
        pairs.append([(bx.to(dtype), by) for bx, by in make_batches(x, y, rows)])
    return pairs[0], pairs[1]


def peak_extra_bytes(fn: Callable[[], T]) -> tuple[T, int]:
    """Run ``fn`` under the profiler; return its value and its extra peak bytes.

    The peak of the CPU allocator's running total over the profiler's allocation
    events, minus the total before the first event.
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events: list[tuple[int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            fields = node.extra_fields
            events.append(
                (node.start_time_ns, fields.alloc_size, fields.total_allocated)
            )
        stack.extend(node.children)
    if not events:
        return out, 0
    events.sort()
    baseline = events[0][2] - events[0][1]
    return out, max(0, max(total for _, _, total in events) - baseline)


class StepRecorder:
    """Times steps (wall and thread CPU), or measures peak memory on memory steps."""

    def __init__(self, mem_steps: Sequence[int]) -> None:
        """Record nothing yet; ``mem_steps`` are profiled instead of timed."""
        self.mem_steps = set(mem_steps)
        self.times_ns: dict[str, dict[int, tuple[int, int]]] = {"base": {}, "meta": {}}
        self.peaks: dict[str, dict[int, int]] = {"base": {}, "meta": {}}

    def run(self, kind: str, step: int, fn: Callable[[], T]) -> T:
        """Run one ``kind`` ("base"/"meta") step, recording time or peak memory."""
        if step in self.mem_steps:
            out, peak = peak_extra_bytes(fn)
            self.peaks[kind][step] = peak
            return out
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        out = fn()
        cpu = time.thread_time_ns() - cpu
        self.times_ns[kind][step] = (time.perf_counter_ns() - wall, cpu)
        return out

    def summary(self, excluded: set[int]) -> dict[str, Any]:
        """Medians (ms) over the non-excluded timed steps, and every peak (bytes)."""
        out: dict[str, Any] = {}
        for kind in ("base", "meta"):
            kept = [t for s, t in self.times_ns[kind].items() if s not in excluded]
            wall, cpu = [w / 1e6 for w, _ in kept], [c / 1e6 for _, c in kept]
            out[f"{kind}_ms_all"], out[f"{kind}_cpu_ms_all"] = wall, cpu
            out[f"{kind}_ms_median"] = statistics.median(wall) if wall else None
            out[f"{kind}_cpu_ms_median"] = statistics.median(cpu) if cpu else None
            out[f"{kind}_peak_bytes"] = {str(s): b for s, b in self.peaks[kind].items()}
        return out


def excluded_steps(settings: dict[str, Any]) -> set[int]:
    """Steps whose times do not count: warm-up, memory steps, probe steps."""
    warm = set(range(1, settings["warmup"] + 1))
    return warm | set(settings["mem_steps"]) | set(settings["probe_steps"])


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    return float((model(x).argmax(-1) == y).double().mean())


@torch.no_grad()
def weight_auc(
    model: torch.nn.Module, meta: torch.nn.Module, blob: dict[str, Any]
) -> float:
    """AUC of the learned weights separating clean from noisy training examples."""
    losses = F.cross_entropy(model(blob["x_train"]), blob["y_train"], reduction="none")
    w = meta(losses.unsqueeze(-1)).squeeze(-1).double()
    noisy = blob["is_noisy"].bool()
    clean_w, noisy_w = w[~noisy], w[noisy]
    greater = (clean_w[:, None] > noisy_w[None, :]).double().mean()
    ties = (clean_w[:, None] == noisy_w[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def final_metrics(
    model: torch.nn.Module, meta: torch.nn.Module, blob: dict[str, Any]
) -> dict[str, float]:
    """Test and meta-set accuracy and weight AUC after training."""
    return {
        "test_acc": accuracy(model, blob["x_test"], blob["y_test"]),
        "meta_acc": accuracy(model, blob["x_meta"], blob["y_meta"]),
        "weight_auc": weight_auc(model, meta, blob),
    }


def setup_threads() -> None:
    """One intra-op and one inter-op thread, for stable timings."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def run_info() -> dict[str, Any]:
    """Versions and load average, stored beside every measurement."""
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()),
    }


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (creating the folder)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1))


# --------------------------------------------------------------------------- Betty


def _betty_problems(recorder: StepRecorder | None, probe: dict[str, Any]) -> tuple:
    """The two ImplicitProblem subclasses, wired to ``recorder`` and ``probe``."""
    from betty.problems import ImplicitProblem

    def record(kind: str, step: int, fn: Callable[[], T]) -> T:
        return fn() if recorder is None else recorder.run(kind, step, fn)

    class Classifier(ImplicitProblem):
        def training_step(self, batch: Batch) -> torch.Tensor:
            x, y = batch[0], batch[1]
            losses = F.cross_entropy(self.module(x), y, reduction="none")
            weights = self.reweight(losses.detach().unsqueeze(-1)).squeeze(-1)
            return (weights * losses).mean()

        def one_step_descent(self, batch: Batch | None = None) -> Any:
            out = record(
                "base",
                self.count,
                lambda: ImplicitProblem.one_step_descent(self, batch),
            )
            if probe.get("active"):
                probe["theta_after_base"] = [
                    p.detach().clone() for p in self.module.parameters()
                ]
            return out

    class Reweight(ImplicitProblem):
        def training_step(self, batch: Batch) -> torch.Tensor:
            x, y = batch[0], batch[1]
            return F.cross_entropy(self.classifier(x), y, reduction="none").mean()

        def step_normal(self, global_step: int | None = None) -> None:
            step = self.classifier.count
            record("meta", step, lambda: ImplicitProblem.step_normal(self, global_step))

        def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
            if probe.get("active"):
                probe["grads"] = [
                    torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                    for p in self.module.parameters()
                ]
            ImplicitProblem.optimizer_step(self, *args, **kwargs)

    return Classifier, Reweight


def build_engine(
    blob: dict[str, Any],
    state: dict[str, Any],
    base_batches: list[Batch],
    meta_batches: list[Batch],
    *,
    alpha: float,
    recorder: StepRecorder | None = None,
    probe: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A Betty Engine over θ, λ (and optimizer states) in ``state``."""
    from betty.configs import Config, EngineConfig
    from betty.engine import Engine

    settings = blob["settings"]
    model, meta = build_models({"settings": settings} | state, dtype)
    classifier_cls, reweight_cls = _betty_problems(recorder, probe or {})
    opt = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    meta_opt = torch.optim.Adam(meta.parameters(), lr=settings["meta_lr"])
    classifier = classifier_cls(
        name="classifier",
        module=model,
        optimizer=opt,
        train_data_loader=base_batches,
        config=Config(type="sama", sama_adam_alpha=alpha),
    )
    reweight = reweight_cls(
        name="reweight",
        module=meta,
        optimizer=meta_opt,
        train_data_loader=meta_batches,
        config=Config(unroll_steps=1),
    )
    engine = Engine(
        problems=[reweight, classifier],
        config=EngineConfig(train_iters=len(base_batches), strategy="cpu"),
        dependencies={"u2l": {reweight: [classifier]}, "l2u": {classifier: [reweight]}},
    )
    # Betty rebuilds each optimizer from its class and defaults: load states after.
    if state.get("base_opt") is not None:
        classifier.optimizer.load_state_dict(state["base_opt"])
    if state.get("meta_opt") is not None:
        reweight.optimizer.load_state_dict(state["meta_opt"])
    return engine


def betty_train(problem_path: Path, result_path: Path, alpha: float) -> None:
    """Train S steps with Betty's SAMA; write times, peaks and final metrics."""
    blob = load_problem(problem_path)
    settings = blob["settings"]
    info_start = run_info()
    base = make_batches(blob["x_train"], blob["y_train"], blob["base_idx"])
    meta = make_batches(blob["x_meta"], blob["y_meta"], blob["meta_idx"])
    recorder = StepRecorder(settings["mem_steps"])
    engine = build_engine(blob, blob, base, meta, alpha=alpha, recorder=recorder)
    start = time.perf_counter()
    engine.run()
    loop_s = time.perf_counter() - start
    model, weight_net = engine.classifier.module, engine.reweight.module
    out = {
        "side": "betty",
        "alpha": alpha,
        "steps": len(base),
        "loop_s": loop_s,
        **recorder.summary(excluded_steps(settings)),
        **final_metrics(model, weight_net, blob),
        "start": info_start,
        "end": run_info(),
    }
    write_json(result_path, out)


def _probe_one(
    blob: dict[str, Any], snap: dict[str, Any], alpha: float, dtype: torch.dtype
) -> dict[str, Any]:
    """One Betty step from a raymeta snapshot: hypergradient, p, θ after base step."""
    step = int(snap["step"])
    base, meta = probe_batches(blob, step, dtype)
    probe: dict[str, Any] = {"active": True}
    engine = build_engine(blob, snap, base, meta, alpha=alpha, probe=probe, dtype=dtype)
    # betty.hypergradient re-exports the function ``sama`` under the module's name
    betty_sama = importlib.import_module("betty.hypergradient.sama")
    original = betty_sama.precondition

    def capture(vectors: Sequence[torch.Tensor], problem: Any) -> Any:
        out = original(vectors, problem)
        probe["direction"] = torch.cat([o.detach().flatten() for o in out])
        return out

    betty_sama.precondition = capture  # record Betty's p = D ⊙ v as it is used
    try:
        engine.run()
    finally:
        betty_sama.precondition = original
    theta_end = [p.detach() for p in engine.classifier.module.parameters()]
    restore_err = max(
        float((a - b).abs().max()) for a, b in zip(theta_end, probe["theta_after_base"])
    )
    return {
        "step": step,
        "grads": torch.cat([g.flatten() for g in probe["grads"]]),
        "direction": probe["direction"],
        "theta_after_base": probe["theta_after_base"],
        "theta_restore_max_abs_err": restore_err,
    }


def betty_probe(problem_path: Path, snap_dir: Path, result_path: Path) -> None:
    """Betty's step on each raymeta snapshot (same θ, λ, Adam states, batches).

    Runs each snapshot in float32 and, as an exact-arithmetic reference, with θ, λ,
    states and features cast to float64; writes a ``.pt`` of the results.
    """
    blob = load_problem(problem_path)
    alpha = blob["settings"]["radius"]
    rows = []
    for path in sorted(snap_dir.glob("step*.pt")):
        snap = torch.load(path, weights_only=True)
        for dtype in (torch.float32, torch.float64):
            rows.append(_probe_one(blob, snap, alpha, dtype) | {"dtype": str(dtype)})
    result_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"side": "betty", "alpha": alpha, "probes": rows}, result_path)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``train`` or ``probe`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["train", "probe"])
    parser.add_argument("--problem", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--alpha", type=float, default=None, help="Betty's R")
    parser.add_argument("--snapshots", type=Path, default=None)
    args = parser.parse_args(argv)
    setup_threads()
    if args.mode == "train":
        alpha = args.alpha
        if alpha is None:
            alpha = load_problem(args.problem)["settings"]["radius"]
        betty_train(args.problem, args.result, alpha)
    else:
        if args.snapshots is None:
            parser.error("probe needs --snapshots")
        betty_probe(args.problem, args.snapshots, args.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
