from __future__ import annotations

import numpy as np
import pytest
import torch

from raymeta.errors import EpisodeError, UnknownTaskFamilyError
from raymeta.tasks.fewshot import (
    TASK_FAMILIES,
    EpisodeStream,
    GaussianClusterFamily,
    SinusoidFamily,
    build_task_family,
    resample_labels,
)


def centroid_accuracy(episode, dims: slice) -> float:
    """1-shot nearest-centroid accuracy using only some (unrotated) dimensions."""
    protos = episode.support_x[:, dims]
    d = torch.cdist(episode.query_x[:, dims], protos)
    return float((episode.support_y[d.argmin(1)] == episode.query_y).float().mean())


def unrotate(family: GaussianClusterFamily, episode):
    rot = torch.from_numpy(family._rotation).float()
    return type(episode)(
        episode.support_x @ rot,
        episode.support_y,
        episode.query_x @ rot,
        episode.query_y,
        episode.kind,
    )


def test_gaussian_clusters_signal_vs_nuisance_structure() -> None:
    fam = GaussianClusterFamily(ways=5, shots=1, queries=15)
    rng = np.random.default_rng(0)
    sig, nuis = slice(0, 8), slice(8, 32)
    clean = [unrotate(fam, fam.sample_episode(rng, outlier=False)) for _ in range(30)]
    outl = [unrotate(fam, fam.sample_episode(rng, outlier=True)) for _ in range(30)]
    clean_sig = np.mean([centroid_accuracy(e, sig) for e in clean])
    clean_nuis = np.mean([centroid_accuracy(e, nuis) for e in clean])
    out_sig = np.mean([centroid_accuracy(e, sig) for e in outl])
    out_nuis = np.mean([centroid_accuracy(e, nuis) for e in outl])
    assert clean_sig > 0.75 and clean_nuis < 0.35  # chance is 0.2
    assert out_nuis > 0.75 and out_sig < 0.35
    assert clean[0].support_x.shape == (5, 32) and clean[0].query_x.shape == (75, 32)


def test_noisy_tasks_resample_labels_with_probability_p() -> None:
    fam = GaussianClusterFamily(ways=5, shots=20, queries=20)
    ep = fam.sample_episode(np.random.default_rng(0), outlier=False)
    noisy = resample_labels(ep, 0.8, 5, np.random.default_rng(1))
    changed = float((noisy.query_y != ep.query_y).float().mean())
    assert noisy.kind == "noisy"
    assert 0.55 < changed < 0.75  # 0.8 * (4/5) = 0.64 expected
    unchanged = resample_labels(ep, 0.0, 5, np.random.default_rng(1))
    assert torch.equal(unchanged.query_y, ep.query_y)


def test_stream_injects_kinds_at_the_requested_rates() -> None:
    fam = GaussianClusterFamily(ways=2, shots=1, queries=1, nuisance_dims=2)
    stream = EpisodeStream(
        family=fam, tasks_per_batch=50, seed=0, noisy_fraction=0.2, outlier_fraction=0.2
    )
    kinds = sum((stream.batch(s).kinds for s in range(20)), [])
    rates = {k: kinds.count(k) / len(kinds) for k in ("clean", "noisy", "outlier")}
    assert abs(rates["noisy"] - 0.2) < 0.04 and abs(rates["outlier"] - 0.2) < 0.04
    clean = EpisodeStream(family=fam, tasks_per_batch=50, seed=0).batch(0)
    assert set(clean.kinds) == {"clean"}


def test_sinusoid_and_line_outliers() -> None:
    fam = SinusoidFamily(shots=5, queries=10)
    rng = np.random.default_rng(0)
    sine = fam.sample_episode(rng, outlier=False)
    assert sine.support_x.shape == (5, 1) and sine.query_y.shape == (10,)
    assert float(sine.query_y.abs().max()) <= 5.0
    line = fam.sample_episode(rng, outlier=True)
    x, y = line.query_x[:, 0].double(), line.query_y.double()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    resid = y - y.mean() - slope * (x - x.mean())
    assert float(resid.abs().max()) < 1e-4  # exactly a line
    noisy = fam.corrupt(sine, 1.0, rng)
    assert noisy.kind == "noisy" and not torch.equal(noisy.query_y, sine.query_y)


def test_digits_smoke_family() -> None:
    fam = build_task_family("digits", ways=5, shots=1, queries=5)
    batch = EpisodeStream(family=fam, tasks_per_batch=3, seed=0, outlier_fraction=0.5)
    b = batch.batch(0)
    assert b.support_x.shape == (3, 5, 64) and float(b.support_x.max()) <= 1.0
    with pytest.raises(EpisodeError, match="only 3 classes"):
        build_task_family("digits", ways=5, classes=[0, 1, 2])


def test_registry_answers_unknown_names_helpfully() -> None:
    assert {"gaussian_clusters", "sinusoid", "digits", "image_folder"} <= set(
        TASK_FAMILIES
    )
    with pytest.raises(UnknownTaskFamilyError, match="did you mean 'sinusoid'"):
        build_task_family("sinusiod")
    with pytest.raises(KeyError, match="registered: "):
        build_task_family("omniglot")


def test_bad_stream_and_family_arguments() -> None:
    fam = GaussianClusterFamily()
    with pytest.raises(EpisodeError, match="exceeds 1"):
        EpisodeStream(
            family=fam, tasks_per_batch=4, noisy_fraction=0.6, outlier_fraction=0.6
        )
    with pytest.raises(EpisodeError, match=r"must lie in \[0, 1\]"):
        EpisodeStream(family=fam, tasks_per_batch=4, noise_prob=1.5)
    with pytest.raises(EpisodeError, match="ways, shots, queries"):
        GaussianClusterFamily(shots=0)


def test_easy_tasks_repeat_one_example_per_class_and_are_separable() -> None:
    digits = build_task_family("digits", ways=4, shots=2, queries=3)
    stream = EpisodeStream(family=digits, tasks_per_batch=40, seed=0, easy_fraction=0.5)
    kinds = stream.batch(0).kinds
    assert 10 < kinds.count("easy") < 30 and set(kinds) == {"clean", "easy"}
    ep = digits.sample_easy(np.random.default_rng(3))
    assert ep.kind == "easy" and ep.support_x.shape == (8, 64)
    for label in range(4):  # every support and query example of a class is one image
        rows = torch.cat(
            [ep.support_x[ep.support_y == label], ep.query_x[ep.query_y == label]]
        )
        assert len(rows) == 5 and torch.equal(rows, rows[:1].expand_as(rows))
    gauss = GaussianClusterFamily(ways=5, shots=1, queries=15)
    rng = np.random.default_rng(0)
    easy = [unrotate(gauss, gauss.sample_easy(rng)) for _ in range(20)]
    clean = [
        unrotate(gauss, gauss.sample_episode(rng, outlier=False)) for _ in range(20)
    ]
    signal = slice(0, 8)
    assert (
        np.mean([centroid_accuracy(e, signal) for e in easy])
        > np.mean([centroid_accuracy(e, signal) for e in clean]) + 0.05
    )


def test_easy_fractions_are_checked_up_front() -> None:
    with pytest.raises(EpisodeError, match="no easy tasks"):
        EpisodeStream(family=SinusoidFamily(), tasks_per_batch=4, easy_fraction=0.1)
    with pytest.raises(EpisodeError, match="exceeds 1"):
        EpisodeStream(
            family=GaussianClusterFamily(),
            tasks_per_batch=4,
            noisy_fraction=0.5,
            outlier_fraction=0.3,
            easy_fraction=0.3,
        )
