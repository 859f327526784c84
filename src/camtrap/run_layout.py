"""The names inside a run folder and a sweep folder, and the columns of a run's history.

Training writes these files, the report, the benchmarks and the sweep read them; each name exists
here once, so a writer and its readers cannot drift apart. Torch-free (and free of every other
``camtrap`` module but the storage helpers), so readers such as the report import nothing heavy.

A run folder (``train.py --out RUN_DIR``)::

    RUN_DIR/
      recipe.yaml             the resolved recipe; pins the folder to it
      scaling.json            the resolved workers; pins the folder to its worker count
      decode.json             the decode mode of its training images; pins the folder to it
      model.pt                the trained model (camtrap.model_file)
      rejected_rows.csv       rows training could not use, with reasons
      metrics.csv, .json      every epoch of every stage (columns: HISTORY_COLUMNS and more)
      tensorboard/            the same as TensorBoard scalars
      stages/<name>/best.pt   a finished stage's best weights, its metrics and history
      stages/<name>/metrics.csv
      ray_results/            Ray Train's own checkpoints (resume of a running stage)

A sweep folder (``tune.py --out SWEEP_DIR``)::

    SWEEP_DIR/
      results.csv             one row per trial
      best_recipe.yaml        the winner, usable as train.py --recipe
      sweep/                  the Ray Tune experiment
      trials/<trial id>/      each trial's run folder
"""

from __future__ import annotations

from dataclasses import dataclass

from camtrap.data import storage

# ------------------------------------------------------------------------------------------ run folder
RECIPE_FILE = "recipe.yaml"
#: The resolved workers of the run (count, GPU, LR scale): a run folder is pinned to its worker count.
SCALING_FILE = "scaling.json"
#: The decode mode of the run's training images (camtrap.data.decoding): a run folder is pinned to it.
DECODE_FILE = "decode.json"
MODEL_FILE = "model.pt"
REJECTED_ROWS_FILE = "rejected_rows.csv"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
TENSORBOARD_DIR = "tensorboard"
STAGES_DIR = "stages"
BEST_FILE = "best.pt"
RAY_RESULTS_DIR = "ray_results"
#: The file inside each Ray Train checkpoint directory.
CHECKPOINT_FILE = "checkpoint.pt"

#: What ``train.py --overwrite`` removes: everything training writes, nothing else a user keeps there.
RUN_OWNED: tuple[str, ...] = (
    RECIPE_FILE, SCALING_FILE, DECODE_FILE, MODEL_FILE, STAGES_DIR, RAY_RESULTS_DIR, METRICS_CSV, METRICS_JSON, TENSORBOARD_DIR,
)

# ------------------------------------------------------------------------------------- history columns
STAGE = "stage"
EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_METRIC = "val_metric"
VAL_PRIOR_METRIC = "val_prior_metric"
VAL_IMAGES = "val_images"
VAL_SEQUENCES = "val_sequences"
IMAGES_PER_S = "images_per_s"
LR = "lr"
EPOCH_SECONDS = "epoch_seconds"
#: Every column of one epoch's report, in the order training writes them.
HISTORY_COLUMNS: tuple[str, ...] = (
    STAGE, EPOCH, TRAIN_LOSS, VAL_LOSS, VAL_METRIC, VAL_PRIOR_METRIC, VAL_IMAGES, VAL_SEQUENCES,
    IMAGES_PER_S, LR, EPOCH_SECONDS,
)
#: What a finished stage keeps of its best epoch (``best.pt``'s ``metrics``).
BEST_METRICS: tuple[str, ...] = (VAL_LOSS, VAL_METRIC, VAL_PRIOR_METRIC, EPOCH)

# ---------------------------------------------------------------------------------------- sweep folder
SWEEP_RESULTS_FILE = "results.csv"
BEST_RECIPE_FILE = "best_recipe.yaml"
SWEEP_NAME = "sweep"
#: Each trial's run folder (a run folder as above), on the sweep's storage so any node can write it.
TRIALS_DIR = "trials"


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder (a local path or a URI)."""

    root: str

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    @property
    def recipe(self) -> str:
        return self.path(RECIPE_FILE)

    @property
    def scaling(self) -> str:
        return self.path(SCALING_FILE)

    @property
    def decode(self) -> str:
        return self.path(DECODE_FILE)

    @property
    def model(self) -> str:
        return self.path(MODEL_FILE)

    @property
    def rejected_rows(self) -> str:
        return self.path(REJECTED_ROWS_FILE)

    @property
    def metrics_csv(self) -> str:
        return self.path(METRICS_CSV)

    @property
    def metrics_json(self) -> str:
        return self.path(METRICS_JSON)

    @property
    def tensorboard(self) -> str:
        return self.path(TENSORBOARD_DIR)

    @property
    def ray_results(self) -> str:
        return self.path(RAY_RESULTS_DIR)

    def stage_dir(self, stage: str) -> str:
        return self.path(STAGES_DIR, stage)

    def stage_best(self, stage: str) -> str:
        return self.path(STAGES_DIR, stage, BEST_FILE)

    def stage_metrics(self, stage: str) -> str:
        return self.path(STAGES_DIR, stage, METRICS_CSV)



@dataclass(frozen=True)
class SweepLayout:
    """Paths inside one sweep folder."""

    root: str

    @property
    def results(self) -> str:
        return storage.join(self.root, SWEEP_RESULTS_FILE)

    @property
    def best_recipe(self) -> str:
        return storage.join(self.root, BEST_RECIPE_FILE)

    @property
    def decode(self) -> str:
        return storage.join(self.root, DECODE_FILE)

    def trial_dir(self, trial_id: str) -> str:
        return storage.join(self.root, TRIALS_DIR, trial_id)
