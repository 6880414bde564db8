"""Task data and task families for meta-learning (no Ray in this package).

- BO meta-learning data: :class:`TaskData` (one task's observations) and the benchmark
  families in :mod:`raymeta.tasks.bo` (Branin, Hartmann-3/6, digits-SVM).
- Episodic few-shot data: transforms and streams in :mod:`raymeta.tasks.episodes`,
  families with contamination in :mod:`raymeta.tasks.fewshot`, an image-folder loader.
- Offline datasets with label noise (:mod:`raymeta.tasks.datasets`).

``TaskFamily`` exists in both :mod:`~raymeta.tasks.bo` and :mod:`~raymeta.tasks.fewshot`
(different ideas); import it from the module you mean.
"""

from raymeta.tasks.bo import FAMILIES, BenchmarkTask, Study, draw_study, find_optimum
from raymeta.tasks.data import TaskData, validate_meta_tasks
from raymeta.tasks.datasets import (
    NoisyDataset,
    noisy_blobs,
    noisy_digits,
    symmetric_label_noise,
)
from raymeta.tasks.episodes import (
    TASK_KINDS,
    Episode,
    EpisodeBatch,
    KShots,
    LabelledData,
    NWays,
    RelabelClasses,
    collate_episodes,
    episode_generator,
    local_task_indices,
    sample_episode,
)
from raymeta.tasks.fewshot import (
    TASK_FAMILIES,
    DatasetFamily,
    EpisodeStream,
    GaussianClusterFamily,
    SinusoidFamily,
    build_task_family,
    register_task_family,
    resample_labels,
)
from raymeta.tasks.imagefolder import list_image_classes, load_image_folder

__all__ = [
    "FAMILIES",
    "TASK_FAMILIES",
    "TASK_KINDS",
    "BenchmarkTask",
    "DatasetFamily",
    "Episode",
    "EpisodeBatch",
    "EpisodeStream",
    "GaussianClusterFamily",
    "KShots",
    "LabelledData",
    "NWays",
    "NoisyDataset",
    "RelabelClasses",
    "SinusoidFamily",
    "Study",
    "TaskData",
    "build_task_family",
    "collate_episodes",
    "draw_study",
    "episode_generator",
    "find_optimum",
    "list_image_classes",
    "load_image_folder",
    "local_task_indices",
    "noisy_blobs",
    "noisy_digits",
    "register_task_family",
    "resample_labels",
    "sample_episode",
    "symmetric_label_noise",
    "validate_meta_tasks",
]
