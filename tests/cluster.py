"""A multi-node Ray and an S3 endpoint on one machine, for the tests that run jobs as on a cluster.

* :class:`SimulatedCluster`: a head started with ``ray start --head --num-cpus=0`` (like ``cluster.yaml``'s
  head, which runs no work) and worker nodes started with ``ray start --address`` that declare CPUs and
  GPUs; there is no GPU, so the code must fall back to CPU compute while scheduling sees GPUs. Every
  node is its own process group: removing a node SIGKILLs it, as a spot preemption would. Never
  ``ray stop``: it would end every Ray on the machine, the test session's and CI's included.
* ``SimulatedCluster(autoscaling=...)``: the same head running Ray's fake autoscaler (the
  ``fake_multinode`` provider, as ``ray.cluster_utils.AutoscalingCluster`` uses it, whose ``ray stop``
  we cannot use): worker nodes come and go as work queues, as on ``cluster.yaml``. The nodes it adds are
  processes of the head's group, so stopping the head stops them.
* :class:`S3Endpoint`: ``moto`` serving a real S3 API on a free localhost port, reached through
  ``AWS_ENDPOINT_URL`` by fsspec (s3fs), pyarrow (Ray Train's storage) and every Ray node started after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from camtrap.runtime import free_port

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
#: Seconds a node or the endpoint may take to come up on a loaded 2-core machine.
START_TIMEOUT = 120


def _stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class S3Endpoint:
    """``python -m moto.server`` on a free port; ``env`` holds the AWS variables that reach it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not come up (exit code {self.proc.poll()})") from None
                time.sleep(0.5)

    def make_bucket(self, name: str) -> str:
        import fsspec

        fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": self.url}, key="testing", secret="testing")
        fs.mkdir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        _stop_group(self.proc)


@dataclass
class Node:
    proc: subprocess.Popen
    num_cpus: float
    num_gpus: float
    #: A custom resource only this node declares: how the GCS's and the state API's records name it.
    tag: str = ""


@dataclass
class SimulatedCluster:
    """A head (0 CPUs, like cluster.yaml's, unless ``head_cpus``) and worker nodes that declare GPUs, all
    on this machine."""

    env: dict[str, str]
    head_cpus: int = 0
    #: Worker node types of Ray's fake autoscaler (``available_node_types`` entries); None: no autoscaler.
    autoscaling: dict | None = None
    idle_timeout_minutes: float = 0.1
    #: Where the head's Ray starts, and so where a job submitted without --working-dir runs.
    cwd: str | None = None
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="rays", dir="/tmp"))
    nodes: list[Node] = field(default_factory=list)
    head: subprocess.Popen | None = None
    gcs_address: str = ""
    dashboard: str = ""

    def __post_init__(self) -> None:
        self.env = {**os.environ, **self.env, "RAY_AUTH_MODE": "disabled",
                    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        self.env.pop("RAY_ADDRESS", None)

    def _node_ports(self) -> list[str]:
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]

    def start(self) -> SimulatedCluster:
        port, dash = free_port(), free_port()
        self.gcs_address, self.dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
        # Every process of this cluster looks itself up here: the state API (Ray Train's placement-group
        # cleaner uses it) would otherwise find several Rays on this machine and give up.
        self.env["RAY_ADDRESS"] = self.gcs_address
        autoscaler = []
        if self.autoscaling is not None:
            config = os.path.join(self.temp_dir, "autoscaler.json")
            with open(config, "w") as f:
                json.dump(self._autoscaler_config(), f)
            autoscaler = [f"--autoscaling-config={config}"]
            self.env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
        self.head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={self.head_cpus}", "--num-gpus=0",
             f"--port={port}", f"--ray-client-server-port={free_port()}", *autoscaler,
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
             "--disable-usage-stats", f"--temp-dir={self.temp_dir}", *self._node_ports()],
            env=self.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.cwd,
        )
        self._wait(lambda: self._dashboard_up(), "the head")
        return self

    def _autoscaler_config(self) -> dict:
        """The whole autoscaler config (the wheel lacks the fake provider's example.yaml)."""
        types = {"ray.head.default": {"resources": {"CPU": self.head_cpus}, "node_config": {}, "max_workers": 0},
                 **{name: {"node_config": {}, "min_workers": 0, **spec} for name, spec in self.autoscaling.items()}}
        empty_lists = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                       "head_start_ray_commands", "worker_start_ray_commands", "cluster_synced_files",
                       "rsync_exclude", "rsync_filter")
        return {
            "cluster_name": "camtrap-fake", "max_workers": sum(t.get("max_workers", 0) for t in types.values()),
            "upscaling_speed": 1.0, "idle_timeout_minutes": self.idle_timeout_minutes,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": self.gcs_address},
            "available_node_types": types, "head_node_type": "ray.head.default", "auth": {}, "docker": {},
            "file_mounts": {}, "file_mounts_sync_continuously": False, **{k: [] for k in empty_lists},
        }

    def _dashboard_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2) as r:
                json.load(r)
            return True
        except OSError:
            return False

    def alive_nodes(self) -> list[dict]:
        """The resources of every node the GCS lists as alive."""
        code = (f"import json, ray; ray.init(address='{self.gcs_address}', logging_level='ERROR'); "
                "print('NODES', json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))")
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120,
                             check=False)
        # The driver's output may carry the autoscaler's event lines ("(autoscaler +0s) Resized to ...") too.
        found = [line.split(" ", 1)[1] for line in out.stdout.splitlines() if line.startswith("NODES ")]
        return json.loads(found[-1]) if out.returncode == 0 and found else []

    def list_state(self, kind: str) -> list[dict]:
        """``ray list <kind> --detail`` of this cluster (actors, nodes, ...), dead ones included.

        Run in a subprocess with this cluster's address: in the test process the state API would
        follow the ``RAY_ADDRESS`` of the session's own Ray instead.
        """
        out = subprocess.run([str(BIN / "ray"), "list", kind, "--detail", "--format", "json", "--limit", "10000",
                              "--address", self.dashboard], env=self.env, capture_output=True, text=True,
                             timeout=120, check=True)
        return json.loads(out.stdout) if out.stdout.lstrip().startswith("[") else []  # "No resource in the cluster"

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} of the simulated cluster did not come up")
            time.sleep(1)

    def add_node(self, num_cpus: float = 2, num_gpus: float = 1) -> Node:
        """Start a worker node and wait until the GCS lists it (found by a resource only it declares)."""
        tag = f"simnode_{len(self.nodes)}_{free_port()}"
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", f"--address={self.gcs_address}", "--block", f"--num-cpus={num_cpus}",
             f"--num-gpus={num_gpus}", f"--resources={json.dumps({tag: 1})}", "--disable-usage-stats",
             *self._node_ports()],
            env=self.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        node = Node(proc, num_cpus, num_gpus, tag)
        self.nodes.append(node)
        self._wait(lambda: any(tag in r for r in self.alive_nodes()), "a worker node")
        return node

    def job_command(self, args: list[str], working_dir: bool = True) -> list[str]:
        """``ray job submit [--working-dir <repo>] -- python <args>``, as a user submits a job (without a
        working dir, the job runs where the head's Ray started)."""
        ship = ["--working-dir", str(REPO)] if working_dir else []
        return [str(BIN / "ray"), "job", "submit", "--address", self.dashboard, *ship, "--", "python", *args]

    def submit(self, args: list[str], timeout: int = 600, working_dir: bool = True) -> subprocess.CompletedProcess:
        """Run a job to its end through the job API; its output is the CompletedProcess's."""
        return subprocess.run(self.job_command(args, working_dir), env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def remove_node(self, node: Node) -> None:
        """SIGKILL the node's whole process group (raylet, its workers): a preempted spot instance."""
        _stop_group(node.proc, signal.SIGKILL)
        self.nodes.remove(node)

    def shutdown(self) -> None:
        for node in list(self.nodes):
            _stop_group(node.proc)
        if self.head is not None:
            _stop_group(self.head)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
