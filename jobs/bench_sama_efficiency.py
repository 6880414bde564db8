"""Benchmark: time and extra peak memory per meta step, SAMA vs unrolled/Neumann/CG.

Usage::

    python jobs/bench_sama_efficiency.py --widths 256,1024,2048 --ks 1,5,10
    python jobs/bench_sama_efficiency.py --scaling --steps 300   # 1 vs 2 workers

Every (width, method, K) is measured in a **fresh process** (``--child``): build a
4-layer MLP on 256-dim inputs (widths 256/1024/2048 give 0.2M/2.4M/8.9M parameters),
take one warm-up base step (Adam), read ``ru_maxrss``, run the meta step once, read
``ru_maxrss`` again: the difference is the extra peak memory. Then the median wall
time of ``--repeats`` further calls. RSS deltas vary by ~30% between processes
(allocator state), so each figure is the median over ``--processes`` (default 3)
fresh processes. The problem is a meta-weight-net reweighting of
a batch of 256 random examples (10 classes). "base" is a plain Adam step for the
cost model. On a CUDA machine pass ``--device cuda`` to use
``torch.cuda.max_memory_allocated`` instead of RSS.

``--scaling`` measures SAMA training throughput (samples/s) on digits with 1 and 2
Ray Train workers on this machine, and on a simulated 2-node cluster
(``ray.cluster_utils.Cluster``, 1 CPU per node).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from raymeta.metalearn.baselines import (
    cg_hypergradient,
    neumann_hypergradient,
    unrolled_hypergradient,
)
from raymeta.metalearn.reweighting import MetaWeightNet, ReweightingProblem
from raymeta.metalearn.sama import sama_hypergradient


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(width: int, method: str, k: int, repeats: int, device: str) -> dict:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    sizes = [256, width, width, width, 10]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(device)
    mwn = MetaWeightNet(100, generator=gen).to(device)
    x = torch.randn(256, 256, generator=gen).to(device)
    y = torch.randint(0, 10, (256,), generator=gen).to(device)
    batch, meta_batch = (x, y), (x[:128], y[:128])
    problem = ReweightingProblem()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def base_step():
        mwn.requires_grad_(False)
        loss = problem.base_loss(model, mwn, batch)
        opt.zero_grad()
        loss.backward()
        mwn.requires_grad_(True)
        opt.step()

    calls = {
        "base": base_step,
        "sama": lambda: sama_hypergradient(problem, model, mwn, batch, meta_batch, opt),
        "unrolled": lambda: unrolled_hypergradient(
            problem, model, mwn, [batch] * k, meta_batch, lr=0.1
        ),
        "neumann": lambda: neumann_hypergradient(
            problem, model, mwn, batch, meta_batch, steps=k, alpha=0.1
        ),
        "cg": lambda: cg_hypergradient(problem, model, mwn, batch, meta_batch, steps=k),
    }
    fn = calls[method]
    base_step()  # warm-up: optimizer state and allocator are live
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated() / 2**20
    else:
        before = rss_mb()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() / 2**20 - before
    else:
        extra = rss_mb() - before
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    return {
        "width": width,
        "params": params,
        "method": method,
        "k": k,
        "extra_mb": extra,
        "bytes_per_param": extra * 2**20 / params,
        "seconds_median": statistics.median(times),
        "seconds_all": times,
    }


def measure(width, method, k, repeats, device):
    cmd = [
        sys.executable,
        __file__,
        "--child",
        f"{width},{method},{k}",
        "--repeats",
        str(repeats),
        "--device",
        device,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def efficiency(args):
    rows = []
    for width in [int(w) for w in args.widths.split(",")]:
        plan = [("base", 0), ("sama", 0)] + [
            (m, k)
            for m in ("unrolled", "neumann", "cg")
            for k in (int(s) for s in args.ks.split(","))
        ]
        wanted = set(args.methods.split(","))
        for method, k in [(m, k) for m, k in plan if m in wanted]:
            runs = [
                measure(width, method, k, args.repeats, args.device)
                for _ in range(args.processes)
            ]
            r = runs[0] | {
                key: statistics.median(run[key] for run in runs)
                for key in ("extra_mb", "bytes_per_param", "seconds_median")
            }
            print(
                f"width={width:5d} params={r['params']:8d} {method:9s} K={k:2d} "
                f"extra_mb={r['extra_mb']:8.1f} B/param={r['bytes_per_param']:6.2f} "
                f"median_s={r['seconds_median']:.4f}",
                flush=True,
            )
            family = f"mlp-width{width}-params{r['params']}"
            label = method if method in ("base", "sama") else f"{method}_K{k}"
            for metric in ("extra_mb", "seconds_median", "bytes_per_param"):
                rows.append(
                    dict(
                        family=family,
                        method=label,
                        metric=metric,
                        value=float(r[metric]),
                    )
                )
    return rows


def scaling(args):
    import ray
    from ray.cluster_utils import Cluster

    from raymeta.config import parse_config
    from raymeta.training import fit as fit_run

    def fit(workers, tag):
        cfg = parse_config(
            dict(
                job="sama",
                steps=args.steps,
                eval_every=args.steps,
                report_every=args.steps,
                checkpoint_every=0,
                model={"hidden": [256, 256]},
                scaling={"num_workers": workers},
                storage={"storage_path": "/tmp/sama-scaling"},
            )
        )
        name = f"scaling-{tag}-{time.time_ns()}"
        out = fit_run(cfg, run_name=name).return_value
        print(
            f"{tag}: workers={workers} samples/s={out['samples_per_s']:.1f} "
            f"loop_s={out['loop_seconds']:.1f}",
            flush=True,
        )
        return dict(
            family="digits-sama-mwn",
            method=tag,
            metric="samples_per_s",
            value=float(out["samples_per_s"]),
        )

    rows = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows += [fit(1, "1_worker"), fit(2, "2_workers")]
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    rows.append(fit(2, "2_nodes_simulated"))
    ray.shutdown()
    cluster.shutdown()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--widths", default="256,1024,2048")
    parser.add_argument("--ks", default="1,5,10")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--methods", default="base,sama,unrolled,neumann,cg")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", default=None)
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    if args.child:
        width, method, k = args.child.split(",")
        print(json.dumps(child(int(width), method, int(k), args.repeats, args.device)))
        return
    rows = scaling(args) if args.scaling else efficiency(args)
    if args.results:
        from raymeta.results import ResultStore
        from raymeta.results.benchmark import record_benchmark

        name = "sama_scaling" if args.scaling else "sama_efficiency"
        record_benchmark(ResultStore(args.results), name, rows)


if __name__ == "__main__":
    main()
