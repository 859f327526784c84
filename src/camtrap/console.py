"""What a job prints: its own lines on the console, Ray's and the libraries' chatter in the session logs.

A job prints a start line (what it will do, on what), one progress display and its summary. Ray Data's
progress blocks and INFO lines, Ray Train's per-report lines and deprecation warnings from Ray's modules
stay out of the console: they are still written to the Ray session's log files
(``/tmp/ray/session_latest/logs``, or the dashboard's Logs tab). ``--verbose`` on any job (the
``CAMTRAP_VERBOSE`` environment variable, which the job's Ray workers inherit) brings them back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator

#: Set to "1" (``--verbose``) to see Ray's own console output again.
VERBOSE_ENV = "CAMTRAP_VERBOSE"
#: Seconds between progress lines when the output is not a terminal.
PROGRESS_SECONDS = float(os.environ.get("CAMTRAP_PROGRESS_SECONDS", "30"))


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


#: What a healthy run's Ray workers print that says nothing to a user: an actor whose constructor
#: arguments sit in the object store and that may restart (ray-project/ray#53727), logged at ERROR level
#: by Ray's C++ core for Ray Train's and Ray Data's own actors; and Ray Train's placement-group cleaner
#: reporting, after every finished trial of a sweep, that it released the finished run's resources.
#: On a host whose name does not resolve (a GPU host without network), every DDP rank's c10d store client
#: warns once that it cannot name its own socket: the process group works all the same.
HARMLESS = re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store"
                      r"|Detected that the Ray Train controller actor .* is dead\. Cleaning up placement group"
                      r"|\[c10d\] The hostname of the client socket cannot be retrieved")
#: A block of lines a healthy run can print, from its first line to its last: Ray Train's controller, on a
#: loaded start, failing once to reach Ray's autoscaling coordinator in time ("it's safe to ignore this
#: error", its own words), followed by the timeout's traceback.
HARMLESS_BLOCK = (re.compile(r"Failed to send resource request for train-"), re.compile(r"GetTimeoutError"))
#: The file, in the Ray session's logs folder, that gets what native code writes to a job's stderr.
NATIVE_STDERR_LOG = "camtrap-driver-native-stderr.log"

_job_stderr: list[int] = []  # set by job_console(): this process is a job's driver, its stderr may move


def quiet_ray_console() -> None:
    """Keep Ray's internal chatter out of this process's console (the driver, or a training worker).

    Ray Data's console handler is raised to WARNING (its file handler, which writes
    ``ray-data.log`` in the session folder, keeps everything); its progress bars and the progress
    blocks it logs every few seconds when the output is not a terminal are off, since the job shows
    its own progress; deprecation warnings raised inside Ray's modules are not shown. A no-op with
    ``--verbose``.
    """
    if verbose():
        return
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray(\.|$)")
    import ray.data
    from ray.data._internal.logging import SessionFileHandler
    from ray.util.debug import log_once

    ray.data.DataContext.get_current().enable_progress_bars = False
    log_once("ray_data_progress_manager_disabled")  # its "Progress bars disabled" warning: we show our own
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, (SessionFileHandler, logging.FileHandler)):
            handler.setLevel(logging.WARNING)
    _drop_harmless_worker_lines()
    _native_stderr_to_session_log()


def quiet_train_worker() -> None:
    """:func:`quiet_ray_console` in a Ray Train worker, and its per-report INFO line
    (``Reporting training result N: TrainingReport(...)``, every epoch from every worker) kept out.

    Ray names that logger after its file's path rather than ``ray.train...``, so Ray Train's own
    ``LoggingConfig`` level does not reach it: it is set here, by the module's path.
    """
    if verbose():
        return
    quiet_ray_console()
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:
        return
    for name in (train_context.__name__, train_context.__file__):
        logging.getLogger(name).setLevel(logging.WARNING)


def drop_harmless(lines: list[str]) -> list[str]:
    """``lines`` without :data:`HARMLESS` lines and :data:`HARMLESS_BLOCK` blocks (a block left open at the
    end of ``lines`` is dropped to its end: Ray forwards a traceback in one batch)."""
    kept, in_block = [], False
    first, last = HARMLESS_BLOCK
    for line in lines:
        if in_block or first.search(line):
            in_block = not last.search(line)
            continue
        if not HARMLESS.search(line):
            kept.append(line)
    return kept


def _drop_harmless_worker_lines() -> None:
    """Filter :data:`HARMLESS` out of the worker output Ray forwards to this driver's console."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # a private module: without it the lines simply stay
        return
    for name, handler in list(getattr(dispatcher, "handlers", [])):
        if name != "ray_print_logs" or getattr(handler, "camtrap_filtered", False):
            continue

        def filtered(data: dict, _forward=handler) -> None:
            lines = drop_harmless(data.get("lines", []))
            if lines:
                _forward({**data, "lines": lines})

        filtered.camtrap_filtered = True
        dispatcher.remove_handler(name)
        dispatcher.add_handler(name, filtered)


def _native_stderr_to_session_log() -> None:
    """In a job's driver, send what native code writes to stderr (Ray's C++ core logs its errors there)
    to :data:`NATIVE_STDERR_LOG` in the session's logs; Python's ``sys.stderr`` stays on the console.

    Nothing is lost: the file keeps every such line. Only inside :func:`job_console`, and only when
    stderr is the process's own (a test harness that captures it is left alone).
    """
    if not _job_stderr or _job_stderr[-1] >= 0 or sys.stderr is not sys.__stderr__:
        return
    try:
        import ray

        logs = ray._private.worker._global_node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - no session folder known: keep stderr as it is
        return
    sys.stderr.flush()
    console = os.dup(2)
    log_fd = os.open(os.path.join(logs, NATIVE_STDERR_LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = os.fdopen(console, "w", buffering=1, encoding=sys.__stderr__.encoding, errors="backslashreplace",
                           closefd=False)
    _job_stderr[-1] = console


@contextlib.contextmanager
def job_console() -> Iterator[None]:
    """The lifetime of a job's console arrangement (see :func:`_native_stderr_to_session_log`): on exit,
    stderr is the process's own again."""
    _job_stderr.append(-1)
    try:
        yield
    finally:
        console = _job_stderr.pop()
        if console >= 0:
            sys.stderr.flush()
            os.dup2(console, 2)
            os.close(console)
            sys.stderr = sys.__stderr__


def train_log_level() -> str:
    """Ray Train's console level: its per-report INFO lines only with ``--verbose``."""
    return "INFO" if verbose() else "WARNING"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """One progress display for a job's main loop: ``done/total unit (percent), rate, ETA``.

    Redrawn in place on a terminal; elsewhere (a log file, ``ray job submit``'s stream) one line every
    ``every`` seconds, so a day-long job's log stays readable.
    """

    def __init__(self, job: str, total: int, unit: str = "images", every: float | None = None, stream=None):
        self.job, self.total, self.unit = job, int(total), unit
        self.every = PROGRESS_SECONDS if every is None else every
        self.stream = stream or sys.stdout
        self.done = 0
        self.start = self._last = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = _duration((self.total - self.done) / rate) if rate > 0 and self.done < self.total else "-"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.job}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%), {rate:.1f} {self.unit}/s, "
                f"ETA {eta}")

    def update(self, n: int) -> None:
        self.done += int(n)
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif now - self._last >= self.every:
            print(self.line(), file=self.stream, flush=True)
            self._last = now

    def close(self) -> None:
        """End the display (a terminal's redrawn line gets its newline)."""
        if self.tty:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
