"""Workers from the recipe's scaling block, resolved on what a cluster has now or its autoscaler can add."""

from __future__ import annotations

import argparse

import pytest

from camtrap.cli import pool_range
from camtrap.config.overrides import apply_overrides
from camtrap.config.recipe import load_recipe
from camtrap.errors import InputError
from camtrap.infer.actors import SCORING_RESOURCE, plan_actors
from camtrap.run_layout import RunLayout
from camtrap.runtime import ClusterView, NodeShape
from camtrap.train.driver import RunDirError, pin_workers
from camtrap.train.loop import auto_amp
from camtrap.train.scaling import ScalingError, plan_workers, scaled_stage

LAPTOP = ClusterView(nodes=[NodeShape(cpus=2, gpus=0)])
#: cluster.yaml's shape before anything scaled: a head with 0 CPUs, GPU and CPU node types from 0.
FRESH_CLUSTER = ClusterView(
    nodes=[NodeShape(cpus=0, gpus=0)],
    node_types=[NodeShape(cpus=64, gpus=8, max_count=2, name="gpu"), NodeShape(cpus=16, gpus=0, max_count=4)],
    source="autoscaler (GCS)",
)
GPU_NODES_UP = ClusterView(nodes=[NodeShape(cpus=0, gpus=0), NodeShape(cpus=8, gpus=4), NodeShape(cpus=8, gpus=4)])


def test_the_seed_recipes_ask_for_8_gpus_on_a_fresh_autoscaling_cluster():
    for name in ("rx50_swsl", "rx101_wsl"):
        w = plan_workers(load_recipe(name), FRESH_CLUSTER)
        assert (w.num_workers, w.use_gpu) == (8, True)
        assert w.resources_per_worker == {"CPU": 1.0, "GPU": 1.0}  # sized from a GPU node, not the 0-CPU head
        assert w.must_autoscale and "must add nodes" in w.availability
        assert w.lr_scale == 1.0


def test_auto_uses_gpus_the_cluster_has_now():
    w = plan_workers(load_recipe("rx50_swsl"), GPU_NODES_UP)
    assert w.use_gpu and not w.must_autoscale and "has 8 GPUs" in w.gpu_reason


def test_auto_falls_back_to_cpu_without_gpus_or_an_autoscaler():
    recipe = apply_overrides(load_recipe("rx50_swsl"), ["scaling.num_workers=2"])
    w = plan_workers(recipe, LAPTOP)
    assert not w.use_gpu and "no GPUs" in w.gpu_reason
    assert w.cpus_per_worker == 0.5 and w.torch_threads == 1  # (2 CPUs - 1 for decoding) / 2 workers


def test_cpu_tiny_keeps_two_cpu_workers_and_flags_override():
    assert plan_workers(load_recipe("cpu_tiny"), LAPTOP).num_workers == 2
    w = plan_workers(load_recipe("cpu_tiny"), GPU_NODES_UP, num_workers=1, use_gpu=True)
    assert (w.num_workers, w.use_gpu) == (1, True)


def test_another_worker_count_scales_the_lr_linearly_unless_switched_off():
    recipe = load_recipe("rx50_swsl")
    w = plan_workers(recipe, GPU_NODES_UP, num_workers=4)
    assert w.lr_scale == 0.5
    stage = scaled_stage(recipe.stages[0], w.lr_scale)
    assert stage.lr == pytest.approx(0.0025) and stage.min_lr == pytest.approx(0.000005)
    off = apply_overrides(recipe, ["scaling.scale_lr=false"])
    assert plan_workers(off, GPU_NODES_UP, num_workers=4).lr_scale == 1.0


def test_a_plan_nothing_can_satisfy_is_refused():
    with pytest.raises(ScalingError, match="8 workers need 8 GPUs"):
        plan_workers(load_recipe("rx50_swsl"), LAPTOP, use_gpu=True)
    with pytest.raises(ScalingError, match="CPUs"):
        plan_workers(load_recipe("cpu_tiny"), LAPTOP, num_workers=16, cpus_per_worker=1.0)


@pytest.mark.parametrize(("capability", "amp"), [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                 ((8, 6), "bf16"), ((9, 0), "bf16")])
def test_amp_auto_is_fp16_before_ampere_and_bf16_from_it(capability, amp):
    assert auto_amp(capability) == amp


def test_a_run_folder_is_pinned_to_its_worker_count(tmp_path):
    run = RunLayout(str(tmp_path))
    recipe = load_recipe("rx50_swsl")
    pin_workers(run, plan_workers(recipe, GPU_NODES_UP))
    pin_workers(run, plan_workers(recipe, GPU_NODES_UP))  # the same count resumes
    with pytest.raises(RunDirError, match="trained with 8 workers.*--num-workers 8"):
        pin_workers(run, plan_workers(recipe, GPU_NODES_UP, num_workers=4))


def test_cluster_yaml_node_types_make_the_seed_recipe_autoscale_onto_gpus():
    """What the driver on a fresh `ray up cluster.yaml` head reads (~/ray_bootstrap_config.yaml)."""
    from pathlib import Path

    from camtrap.runtime import _node_types_from_bootstrap

    types = _node_types_from_bootstrap(str(Path(__file__).resolve().parents[1] / "cluster.yaml"))
    assert {(t.name, t.cpus, t.gpus, t.max_count) for t in types} == {
        ("gpu", 48, 4, 2), ("gpu_score", 8, 1, 8), ("cpu", 16, 0, 4)}
    assert {t.name: t.custom for t in types}["gpu_score"] == {SCORING_RESOURCE: 1.0}
    view = ClusterView(nodes=[NodeShape(cpus=0, gpus=0)], node_types=types, source="autoscaler")
    w = plan_workers(load_recipe("rx50_swsl"), view)
    assert (w.num_workers, w.use_gpu, w.must_autoscale) == (8, True, True)
    assert w.resources_per_worker == {"CPU": 1.0, "GPU": 1.0}
    with pytest.raises(ScalingError, match="32 workers need 32 GPUs"):
        plan_workers(load_recipe("rx50_swsl"), view, num_workers=32)
    # Scoring on the same fresh cluster: GPU actors pinned to the single-GPU scoring type, a pool per
    # model that may grow onto all 8 of its nodes (4 each for a two-model ensemble).
    actors = plan_actors(view, num_models=2)
    assert actors.use_gpu and actors.resources == {SCORING_RESOURCE: 1.0}
    assert (actors.min_actors, actors.max_actors, actors.cpus) == (1, 4, 1.0)
    assert actors.remote_args() == {"num_cpus": 1.0, "num_gpus": 1, "resources": {SCORING_RESOURCE: 1.0}}
    assert not actors.hosts_up(view) and "on the scoring node type" in actors.describe()
    # The line the README quotes.
    assert ("model actors on GPU (auto: the autoscaler can add GPU nodes (up to 16 GPUs)): 2 model(s) x 1..4 actors"
            in actors.describe())


def test_scoring_actors_default_to_gpus_the_cluster_has_or_can_add():
    up = plan_actors(GPU_NODES_UP, num_models=1)
    assert up.use_gpu and (up.min_actors, up.max_actors) == (1, 8) and up.resources == {}
    assert up.hosts_up(GPU_NODES_UP) and "has 8 GPUs" in up.gpu_reason
    fresh = plan_actors(FRESH_CLUSTER, num_models=2)
    assert fresh.use_gpu and (fresh.min_actors, fresh.max_actors) == (1, 8) and not fresh.hosts_up(FRESH_CLUSTER)
    assert plan_actors(FRESH_CLUSTER, 1, use_gpu=False).use_gpu is False
    fixed = plan_actors(GPU_NODES_UP, 1, pool=(3, 3))
    assert (fixed.min_actors, fixed.max_actors) == (3, 3)


def test_scoring_on_a_laptop_is_one_cpu_actor_per_model_and_gpus_it_cannot_get_are_refused():
    one = plan_actors(LAPTOP, num_models=1)
    assert not one.use_gpu and (one.min_actors, one.max_actors, one.cpus, one.threads) == (1, 1, 1.0, 1)
    assert one.remote_args() == {"num_cpus": 1.0, "num_gpus": 0}
    two = plan_actors(LAPTOP, num_models=2)
    assert (two.max_actors, two.cpus) == (1, 0.5)  # one CPU left to decode, the rest shared
    with pytest.raises(InputError, match="need at least 1 GPU"):
        plan_actors(LAPTOP, 1, use_gpu=True)


@pytest.mark.parametrize(("text", "pool"), [("2", (2, 2)), ("1..8", (1, 8)), ("3..3", (3, 3))])
def test_actors_per_model_takes_n_or_min_max(text, pool):
    assert pool_range(text) == pool


@pytest.mark.parametrize("text", ["0", "4..2", "1..", "a..b", "0..3"])
def test_actors_per_model_refuses_what_is_not_a_pool(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected"):
        pool_range(text)


#: The cluster that hung (issue 23): a 0-CPU head and two nodes of 1 CPU + 1 GPU each.
ONE_CPU_PER_GPU = ClusterView(nodes=[NodeShape(cpus=0, gpus=0), NodeShape(cpus=1, gpus=1), NodeShape(cpus=1, gpus=1)])


def test_gpu_workers_on_one_cpu_per_gpu_leave_the_cpus_to_decode():
    w = plan_workers(apply_overrides(load_recipe("rx50_swsl"), ["scaling.num_workers=2"]), ONE_CPU_PER_GPU)
    assert w.use_gpu and w.resources_per_worker == {"CPU": 0.0, "GPU": 1.0}
    assert w.decode_cpus == 2 and w.torch_threads == 1
    # Two CPUs per GPU: one for the worker, one to decode; a 16-CPU single-GPU host: one, and 15 decode.
    two = ClusterView(nodes=[NodeShape(cpus=4, gpus=2)])
    assert plan_workers(load_recipe("rx50_swsl"), two, num_workers=2).resources_per_worker["CPU"] == 1.0
    host = plan_workers(load_recipe("rx50_swsl"), ClusterView(nodes=[NodeShape(cpus=16, gpus=1)]), num_workers=1)
    assert host.cpus_per_worker == 1.0 and host.decode_cpus == 15


def test_a_plan_that_leaves_decode_no_cpu_is_refused_instead_of_hanging():
    recipe = apply_overrides(load_recipe("rx50_swsl"), ["scaling.num_workers=2"])
    with pytest.raises(ScalingError, match=r"decode the images no whole CPU.*wait forever"):
        plan_workers(recipe, ONE_CPU_PER_GPU, cpus_per_worker=1.0)
    # Half a CPU left on each node is no whole CPU for a decode task either.
    halves = ClusterView(nodes=[NodeShape(cpus=1.5, gpus=1), NodeShape(cpus=1.5, gpus=1)])
    with pytest.raises(ScalingError, match="no whole CPU"):
        plan_workers(recipe, halves, cpus_per_worker=1.0)
    # A CPU-only node type the autoscaler can add is a way out: the plan stands.
    scalable = ClusterView(nodes=ONE_CPU_PER_GPU.nodes, node_types=[NodeShape(cpus=8, gpus=0, max_count=4)],
                           source="autoscaler (GCS)")
    assert plan_workers(recipe, scalable, cpus_per_worker=1.0).decode_cpus == 8
    # CPU workers: one CPU and one worker asking for all of it.
    with pytest.raises(ScalingError, match="no whole CPU"):
        plan_workers(load_recipe("cpu_tiny"), ClusterView(nodes=[NodeShape(cpus=1, gpus=0)]), num_workers=1,
                     cpus_per_worker=1.0)
