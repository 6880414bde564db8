"""Ray Tune adapter: the ScaML-GP searcher, meta-data sources and parallel GP fits.

- :class:`ScaMLGPSearch`: a Tune ``Searcher`` warm-started from earlier runs.
- Meta-data sources: :class:`FrameMetaData`, :class:`StoreMetaData`,
  :class:`TuneMetaData` (or pass a DataFrame / ResultStore / ResultGrid directly).
- :class:`StoreCallback`: appends every finished trial to the results store, so each
  run becomes meta-data for the next; :class:`ReconcileCallback` aligns a restored
  searcher with Tune's trials.
- :func:`restorable`: whether (and from which intact state) a Tune run can resume.
- :func:`convert_search_space`: the one place Tune domains map to the unit cube.
- :func:`fit_meta_tasks`: meta-task GP fits as zero-CPU Ray tasks, cached by content.
"""

from raymeta.search.callback import ReconcileCallback, StoreCallback
from raymeta.search.fitting import FitReport, MetaFitCache, fit_meta_tasks
from raymeta.search.metadata import (
    FrameMetaData,
    StoreMetaData,
    TuneMetaData,
    build_meta_tasks,
    load_meta_frame,
)
from raymeta.search.resume import restorable
from raymeta.search.searcher import ScaMLGPSearch
from raymeta.search.space import (
    SUPPORTED_DOMAINS,
    Parameter,
    SearchSpace,
    convert_search_space,
)
from raymeta.search.trainables import family_space, family_trainable, record_meta_tasks
from raymeta.search.tuning import (
    SEARCHERS,
    TimedSearcher,
    best_regret_curve,
    build_searcher,
    run_family_tuning,
)

__all__ = [
    "SEARCHERS",
    "SUPPORTED_DOMAINS",
    "FitReport",
    "FrameMetaData",
    "MetaFitCache",
    "Parameter",
    "ReconcileCallback",
    "ScaMLGPSearch",
    "SearchSpace",
    "StoreCallback",
    "StoreMetaData",
    "TimedSearcher",
    "TuneMetaData",
    "best_regret_curve",
    "build_meta_tasks",
    "build_searcher",
    "convert_search_space",
    "family_space",
    "family_trainable",
    "fit_meta_tasks",
    "load_meta_frame",
    "record_meta_tasks",
    "restorable",
    "run_family_tuning",
]
