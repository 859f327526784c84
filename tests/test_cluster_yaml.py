"""cluster.yaml against Ray's own autoscaler schema and this project's rules (offline: no AWS call)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def config(text) -> dict:
    return yaml.safe_load(text)


def gpu_types(config: dict) -> dict:
    """Node types on GPU instance families (g*, p*)."""
    return {
        name: t
        for name, t in config["available_node_types"].items()
        if re.match(r"^(g\d|p\d)", t["node_config"]["InstanceType"])
    }


def test_valid_against_rays_schema(config):
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # the file as written
    # What `ray up` does before it calls AWS: merge with the provider's defaults, then validate.
    validate_config(prepare_config(copy.deepcopy(config)))


def test_aws_cluster_shape(config):
    assert config["cluster_name"] == "camtrap"
    assert config["provider"]["type"] == "aws" and config["provider"]["region"] == "us-west-2"
    assert config["auth"]["ssh_user"] == "ubuntu"
    assert config["idle_timeout_minutes"] == 10
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert not re.match(r"^(g\d|p\d)", head["node_config"]["InstanceType"])


def test_gpu_workers_scale_from_zero(config):
    gpus = gpu_types(config)
    assert gpus, "no GPU worker type"
    for name, t in gpus.items():
        assert t["min_workers"] == 0, name
        assert t["max_workers"] >= 1, name
    total_max = sum(
        t.get("max_workers", 0)
        for n, t in config["available_node_types"].items()
        if n != config["head_node_type"]
    )
    assert config["max_workers"] >= total_max


def test_docker_image_is_ray_2_60_gpu(config):
    image = config["docker"]["image"]
    assert image.startswith("rayproject/ray:") and "2.60" in image.split(":", 1)[1]
    assert "gpu" in image and "py311" in image
    for key in ("run_options", "head_run_options", "worker_run_options"):
        for opt in config["docker"].get(key, []):
            assert not re.match(r"^(-p\b|--publish)", str(opt).strip()), f"docker publishes a port: {opt}"


def test_nodes_get_this_checkout_and_install_its_pinned_dependencies_from_pyproject(config):
    """One dependency list (pyproject.toml), no copy here to drift; the project itself on every node."""
    mount = next(remote for remote, local in config["file_mounts"].items() if local == ".")
    setup = " ".join(config["setup_commands"])
    assert re.search(rf'pip install [^;&]*"{re.escape(mount.replace("~", "$HOME"))}\[s3\]"', setup), setup
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[\[<>=!~ ]", dep, maxsplit=1)[0]
        assert not re.search(rf'"{re.escape(name)}[\[<>=!~"]', setup), f"{name} pinned again in setup_commands"
    assert ".gitignore" in config["rsync_filter"] and any(".git" in p for p in config["rsync_exclude"])
    # Jobs without --working-dir run where the head's Ray started: the synced checkout.
    start = " ".join(config["head_start_ray_commands"])
    assert re.search(rf"cd {re.escape(mount)} &&[^;]*ray start --head", start), start


def test_only_ssh_is_opened(config, text):
    # Every port number of an ingress rule anywhere in the file, comments included, is 22.
    ports = re.findall(r"(?:FromPort|ToPort)\s*:\s*(-?\d+)", text)
    assert all(p == "22" for p in ports), ports
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        assert rule.get("FromPort") == 22 and rule.get("ToPort") == 22, rule


def test_no_credentials(text):
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)
    assert not re.search(
        r"aws_secret|secret_access_key|aws_access_key_id|aws_session_token", text, re.IGNORECASE
    )
    assert not re.search(r"BEGIN [A-Z ]*PRIVATE KEY", text)
