"""ScaML-GP: scalable meta-learning with Gaussian processes (no Ray in this package).

Choose ScaML-GP for Bayesian optimisation when earlier, related tasks have been
evaluated: each meta-task gets its own GP (:func:`fit_task_gp`, independent, so they
fit in parallel), and the target task's prior is their weighted sum (:class:`ScaMLGP`,
a botorch ``Model``); :func:`propose` fits the weights and target kernel by MAP and
optimises the acquisition. With no meta-tasks it is plain GP-BO.
"""

from raymeta.gp.benchmark import (
    METHODS,
    BOResult,
    compare_methods,
    cumulative_regret,
    regret_bands,
    run_bo,
    simple_regret,
)
from raymeta.gp.fit import FitSettings, TaskGPState, build_meta_gp, fit_task_gp
from raymeta.gp.meta import MetaStack
from raymeta.gp.model import PRUNE_THRESHOLD, ScaMLGP, TargetHypers, fit_target
from raymeta.gp.priors import META_PRIORS, TARGET_PRIORS
from raymeta.gp.propose import ACQUISITIONS, MAX_FIT_TASKS, Proposal, propose
from raymeta.gp.screen import likelihood_gains, screen_tasks

__all__ = [
    "ACQUISITIONS",
    "MAX_FIT_TASKS",
    "METHODS",
    "META_PRIORS",
    "PRUNE_THRESHOLD",
    "TARGET_PRIORS",
    "BOResult",
    "FitSettings",
    "MetaStack",
    "Proposal",
    "ScaMLGP",
    "TargetHypers",
    "TaskGPState",
    "build_meta_gp",
    "compare_methods",
    "cumulative_regret",
    "fit_target",
    "likelihood_gains",
    "fit_task_gp",
    "propose",
    "regret_bands",
    "run_bo",
    "screen_tasks",
    "simple_regret",
]
