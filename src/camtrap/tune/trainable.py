"""The Ray Tune trainable: one trial of a sweep, trained by the very code of ``train.py``.

Ray 2.60 runs Ray Train V2, where a ``TorchTrainer`` cannot be handed to a ``Tuner`` directly. A trial
is a function trainable that builds its recipe from the space's sampled values and calls
:func:`camtrap.train.driver.run_training` with Ray Train's ``TuneReportCallback`` in the trainer's run
config, so every epoch's report reaches Tune and ASHA can stop a weak trial after its rung.
"""

from __future__ import annotations

from camtrap.config.recipe import Recipe
from camtrap.config.tune_space import TuneSpace, trial_recipe
from camtrap.run_layout import SweepLayout

#: CPU held by a trial's driver function: it only waits on its trainer (Tune refuses an empty bundle).
TRIAL_CPU = 0.05


def tune_trial(config: dict, base: dict, space: dict, data: dict, sweep_dir: str) -> None:
    """One trial: the space's sampled ``config`` applied to the base recipe, trained like ``train.py``.

    The trial's run folder is ``SWEEP_DIR/trials/<trial id>`` on the sweep's own storage (not Tune's
    node-local trial folder), so a trial placed on any node checkpoints where every node and a resumed
    sweep can read it.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from camtrap.runtime import cpus_per_actor
    from camtrap.train.driver import run_training

    space_model = TuneSpace.model_validate(space)
    recipe = trial_recipe(Recipe.model_validate(base), space_model, config)
    res = space_model.resources
    # Slack beyond the trial's own bundles: a finished trial's actors can take a moment to release their
    # CPU, and a worker group that needs every last CPU would wait for them forever.
    cpus = res.cpus_per_worker or cpus_per_actor(res.num_workers, res.use_gpu, reserve=TRIAL_CPU + 0.25)
    run_training(
        recipe,
        out_dir=SweepLayout(sweep_dir).trial_dir(tune.get_context().get_trial_id()),
        num_workers=res.num_workers,
        use_gpu=res.use_gpu,
        cpus_per_worker=cpus,
        max_failures=0,
        callbacks=[TuneReportCallback()],
        **data,
    )
