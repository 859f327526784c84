"""The sweep report: a finished sweep's page from ``results.csv``, a running one's from Tune's per-trial files.

No Ray: the sweep folder is laid out as Ray Tune 2.60 and ``camtrap.tune.sweep`` leave it. ``results.csv``
and ``best_recipe.yaml`` are written by the sweep's own :func:`summarize_sweep` (on stand-ins of Tune's
results); each trial folder under ``sweep/`` is named as Tune names it and holds what Tune's loggers write:
``params.json``, ``progress.csv`` (the report's keys, then Tune's own, no ``config``), ``result.json`` (one
JSON line per report, with ``config``) and, for a failed trial, ``error.txt``; next to them Tune's
``experiment_state-<date>.json`` with each trial's status.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from jobs import load_job
from PIL import Image

from camtrap.config.recipe import load_recipe
from camtrap.config.tune_space import load_tune_space
from camtrap.evaluate.sweep import REFRESH_SECONDS, make_sweep_report, plot_parameter, watch_sweep_report
from camtrap.evaluate.sweep_trials import read_sweep
from camtrap.run_layout import HISTORY_COLUMNS
from camtrap.tune.sweep import summarize_sweep

SPACE, RECIPE = "warmup_cosine", "rx50_swsl"  # 4 parameters; min_lr spans two decades, lr less than one
EXPERIMENT = "28ba6"
DATE = "2026-11-29_07-26-14"
ERROR = "RuntimeError: CUDA out of memory <b>bold</b> & 'quoted'"
#: (status in results.csv, sampled parameters, epochs reported of the budget's 6)
TRIALS = [
    ("stopped_early", {"lr": 0.0111, "warmup_epochs": 0.3, "min_lr": 8.5e-5, "crop_ratio": 1.21}, 2),
    ("completed", {"lr": 0.0052, "warmup_epochs": 1.2, "min_lr": 2.0e-6, "crop_ratio": 1.14}, 6),  # the best
    ("failed", {"lr": 0.0023, "warmup_epochs": 1.9, "min_lr": 1.1e-5, "crop_ratio": 1.07}, 0),
]
#: While running: the best trial has 3 of its 6 epochs; Tune's statuses and the page's words for them.
RUNNING_EPOCHS = [2, 3, 0]
TUNE_STATUS = {"completed": "RUNNING", "stopped_early": "TERMINATED", "failed": "ERROR"}
LIVE_WORDS = {"completed": "running", "stopped_early": "terminated", "failed": "failed"}


def trial_dir_name(i: int, params: dict) -> str:
    """As ``Trial._generate_dirname``: trainable, trial id, experiment tag (counter, params at 4 places), date."""
    tag = ",".join(f"{k}={v:.4f}" for k, v in sorted(params.items()))
    return f"tune_trial_{EXPERIMENT}_{i:05d}_{i}_{tag}_{DATE}"


def tune_report(i: int, params: dict, it: int, last: bool) -> dict:
    """One epoch's result as Tune logs it: the trainer's report (the run's history columns), then Tune's keys."""
    metric = 0.10 - 0.003 * it + 0.01 * abs(params["lr"] - 0.005) / 0.005  # a worse lr, a higher loss
    report = dict.fromkeys(HISTORY_COLUMNS, 0.1) | {"stage": "s296", "epoch": it, "val_metric": metric}
    return report | {
        "checkpoint_path": f"sweep/trials/{EXPERIMENT}_{i:05d}/ray_results/s296/checkpoint_{it}",
        "timestamp": 1795937212 + it, "checkpoint_dir_name": None, "done": last, "training_iteration": it,
        "trial_id": f"{EXPERIMENT}_{i:05d}", "date": DATE, "time_this_iter_s": 2.0, "time_total_s": 2.0 * it,
        "pid": 16134, "hostname": "vm", "node_ip": "192.0.2.2", "config": dict(params),
        "time_since_restore": 2.0 * it, "iterations_since_restore": it,
    }


def build_sweep(root: Path, finished: bool, experiment_state: bool = True) -> Path:
    """A sweep folder: Tune's experiment under ``sweep/``, and when ``finished`` the sweep's summary."""
    exp = root / "sweep"
    grid, trial_data = [], []
    for i, (status, params, epochs) in enumerate(TRIALS):
        epochs = epochs if finished else RUNNING_EPOCHS[i]
        folder = exp / trial_dir_name(i, params)
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True))
        reports = [tune_report(i, params, it, it == epochs) for it in range(1, epochs + 1)]
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in reports))
        progress = pd.DataFrame([{k: v for k, v in r.items() if k != "config"} for r in reports])
        if reports:
            progress.to_csv(folder / "progress.csv", index=False)
        if status == "failed":
            (folder / "error.txt").write_text(f"Failure # 1 (occurred at {DATE})\n{ERROR}\n")
        grid.append(SimpleNamespace(metrics_dataframe=progress if reports else None, config=params, path=str(folder),
                                    error=RuntimeError(ERROR) if status == "failed" else None))
        trial_data.append([json.dumps({"trial_id": f"{EXPERIMENT}_{i:05d}", "status": TUNE_STATUS[status],
                                       "relative_logdir": folder.name, "config": params}),
                           json.dumps({"start_time": 1795937176.1, "num_failures": int(status == "failed")})])
    if experiment_state:
        state = {"trial_data": trial_data, "runner_data": {"_metric": "val_metric", "_iteration": 5722},
                 "stats": {"start_time": 1795937174.6}}
        (exp / f"experiment_state-{DATE}.json").write_text(json.dumps(state, indent=2))
    if finished:
        summarize_sweep(grid, load_tune_space(SPACE), load_recipe(RECIPE), str(root))
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return build_sweep(tmp_path_factory.mktemp("finished"), finished=True)


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Path:
    return build_sweep(tmp_path_factory.mktemp("running"), finished=False)


class Page(HTMLParser):
    """The table's rows, the images, the refresh pragma and the error cells' text; nesting checked."""

    VOID = frozenset({"img", "br", "meta"})

    def __init__(self, path: Path):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problems: list[str] = []
        self.rows: dict[str, str] = {}
        self.srcs: list[str] = []
        self.refresh: list[str] = []
        self.cells: list[str] = []
        self.feed(path.read_text(encoding="utf-8"))
        self.close()
        assert not self.problems and not self.open, (self.problems, self.open)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.open += [] if tag in self.VOID else [tag]
        if tag == "tr" and "data-trial-id" in a:
            self.rows[a["data-trial-id"]] = a["data-status"]
        if tag == "img":
            self.srcs.append(a["src"])
        if tag == "meta" and a.get("http-equiv") == "refresh":
            self.refresh.append(a["content"])
        if tag == "td":
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag not in self.VOID and (not self.open or self.open.pop() != tag):
            self.problems.append(f"</{tag}> out of order")

    def handle_data(self, data):
        if self.open and self.open[-1] == "td":
            self.cells[-1] += data


def check_pngs(out: Path) -> list[str]:
    names = sorted(p.name for p in out.glob("*.png"))
    for name in names:
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width >= 300 and im.height >= 200, (name, im.size)
    return names


def report(args: list[str], capsys) -> tuple[int, str, str]:
    rc = load_job("report").main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_finished_sweep_page(finished, tmp_path, capsys):
    out = tmp_path / "report"
    rc, printed, _ = report(["--sweep", str(finished), "--out", str(out)], capsys)
    assert rc == 0
    params = list(load_tune_space(SPACE).parameters)
    assert check_pngs(out) == sorted(["sweep_curves.png"] + [f"metric_vs_{p}.png" for p in params])
    page = Page(out / "index.html")
    results = pd.read_csv(finished / "results.csv")
    assert page.rows == dict(zip(results["trial_id"], results["status"]))
    assert sorted(page.rows.values()) == sorted(s for s, _, _ in TRIALS)
    assert page.refresh == []  # finished: the page stays still
    best = trial_dir_name(1, TRIALS[1][1])
    assert next(iter(page.rows)) == best and f"{EXPERIMENT}_00001 (best)" in (out / "index.html").read_text()
    charts = [s for s in page.srcs if s.startswith("metric_vs_")]
    assert len(charts) == len(params) and "sweep_curves.png" in page.srcs
    # The error is text on the page, never markup.
    assert any(ERROR in cell for cell in page.cells)
    assert "&lt;b&gt;bold&lt;/b&gt;" in (out / "index.html").read_text()
    assert "finished: 1 stopped_early, 1 completed, 1 failed" in printed and str(out / "index.html") in printed


def test_running_sweep_page_reloads_and_reads_tunes_files(running, tmp_path, capsys):
    out = tmp_path / "live"
    rc, printed, _ = report(["--sweep", str(running), "--out", str(out)], capsys)
    assert rc == 0
    page = Page(out / "index.html")
    assert page.refresh == [str(REFRESH_SECONDS)]
    names = {trial_dir_name(i, p): LIVE_WORDS[s] for i, (s, p, _) in enumerate(TRIALS)}
    assert page.rows == names
    assert len(check_pngs(out)) == 1 + len(TRIALS[0][1])
    assert any(ERROR in cell for cell in page.cells)  # from error.txt
    state = read_sweep(str(running))
    assert [t.epochs for t in state.trials] == RUNNING_EPOCHS and state.metric == "val_metric"
    assert list(state.trials[1].history.index) == [1, 2, 3]
    assert state.trials[2].error == ERROR  # error.txt without Tune's "Failure # 1" header, as results.csv keeps it
    assert "running: 1 terminated, 1 running, 1 failed" in printed


def test_running_without_experiment_state_guesses_statuses_from_the_files(tmp_path):
    sweep = build_sweep(tmp_path / "s", finished=False, experiment_state=False)
    (sweep / "sweep" / trial_dir_name(0, TRIALS[0][1]) / "result.json").write_text(
        (sweep / "sweep" / trial_dir_name(0, TRIALS[0][1]) / "result.json").read_text() + '{"stage": "s2')
    (sweep / "sweep" / trial_dir_name(0, TRIALS[0][1]) / "progress.csv").unlink()  # result.json only
    state = read_sweep(str(sweep))
    assert [t.status for t in state.trials] == ["running", "running", "failed"]
    assert [t.epochs for t in state.trials] == RUNNING_EPOCHS  # the half-written last line is skipped


def test_a_just_started_sweep_has_a_page_without_trials(tmp_path, capsys):
    (tmp_path / "s" / "sweep").mkdir(parents=True)
    rc, printed, _ = report(["--sweep", str(tmp_path / "s"), "--out", str(tmp_path / "r")], capsys)
    assert rc == 0 and "no trial folder yet" in printed
    assert Page(tmp_path / "r" / "index.html").rows == {}
    assert check_pngs(tmp_path / "r") == ["sweep_curves.png"]


def test_watch_renders_until_results_csv_appears(running, finished, tmp_path, capsys):
    sweep = tmp_path / "sweep_dir"
    shutil.copytree(running, sweep)
    out, lines, naps = tmp_path / "watched", [], []

    def sleep(seconds):
        naps.append(seconds)
        assert Page(out / "index.html").refresh == ["3"]  # reloads at the watch's pace
        if len(naps) == 2:  # the sweep ends
            for name in ("results.csv", "best_recipe.yaml"):
                shutil.copy(finished / name, sweep / name)

    summary = watch_sweep_report(str(sweep), str(out), 2.5, echo=lines.append, sleep=sleep)
    assert summary.finished and naps == [2.5, 2.5] and len(lines) == 3
    assert Page(out / "index.html").refresh == []
    # The job's --watch on a finished sweep renders once and returns.
    rc, printed, _ = report(["--sweep", str(finished), "--out", str(tmp_path / "w"), "--watch", "5"], capsys)
    assert rc == 0 and printed.count("finished:") == 2  # the watch's line, then the summary's


def test_sweep_and_report_may_be_uris(running, tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in running.rglob("*"):
        if path.is_file():
            fs.pipe_file(f"/{tmp_path.name}/sweep/{path.relative_to(running).as_posix()}", path.read_bytes())
    try:
        summary = make_sweep_report(f"memory://{tmp_path.name}/sweep", f"memory://{tmp_path.name}/report")
        assert summary.counts == {"running": 1, "terminated": 1, "failed": 1}
        assert fs.exists(f"/{tmp_path.name}/report/index.html")
        assert len(fs.glob(f"/{tmp_path.name}/report/*.png")) == 1 + len(TRIALS[0][1])
    finally:
        fs.rm(f"/{tmp_path.name}", recursive=True)


def test_log_axis_only_for_a_parameter_spanning_more_than_a_decade(finished):
    state = read_sweep(str(finished))
    assert plot_parameter(state, "min_lr").axes[0].get_xscale() == "log"
    assert plot_parameter(state, "lr").axes[0].get_xscale() == "linear"


@pytest.mark.parametrize("case", ["missing", "not_a_sweep", "bad_results", "bad_progress", "bad_params"])
def test_bad_sweep_folder_exits_2_naming_it(case, finished, tmp_path, capsys):
    sweep = tmp_path / "sweep_dir"
    if case != "missing":
        shutil.copytree(finished, sweep)
    trial = sweep / "sweep" / trial_dir_name(0, TRIALS[0][1])
    named = str(sweep)
    if case == "not_a_sweep":
        shutil.rmtree(sweep / "sweep")
        (sweep / "results.csv").unlink()
    elif case == "bad_results":
        named = str(sweep / "results.csv")
        (sweep / "results.csv").write_text("trial_id,status\nx,completed\n")
    elif case == "bad_progress":
        named = f"{trial / 'progress.csv'}:3"
        frame = pd.read_csv(trial / "progress.csv")
        frame["val_metric"] = frame["val_metric"].astype(object)
        frame.loc[1, "val_metric"] = "oops"
        frame.to_csv(trial / "progress.csv", index=False)
    elif case == "bad_params":
        (sweep / "results.csv").unlink()
        named = str(trial / "params.json")
        (trial / "params.json").write_text("{not json")
    rc, _, err = report(["--sweep", str(sweep), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and named in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()  # nothing written before the inputs are read


@pytest.mark.parametrize("args, says", [
    ([], "exactly one of --run"),
    (["--run", "r", "--sweep", "s"], "exactly one of --run"),
    (["--sweep", "s", "--submission", "x.csv"], "--submission go(es) with --run"),
    (["--run", "r", "--watch", "5"], "--watch goes with --sweep"),
])
def test_run_and_sweep_are_alternatives(args, says, tmp_path, capsys):
    rc, _, err = report(args + ["--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and says in err


def test_the_sweep_report_imports_neither_torch_nor_ray():
    code = ("import sys, camtrap.evaluate.sweep; "
            "print(sorted(m for m in ('torch', 'timm', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
