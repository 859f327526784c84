"""Validate a Camtrap DP package offline against the standard's own 1.0.2 files (frictionless).

How the standard validates its example, done without a network: the profile, the three table schemas
and the two schemas the profile refers to (``../shared/reference/camtrap-dp-1.0.2/``) are served from a
local HTTP server under a ``/1.0.2/`` path (the profile requires versioned schema URLs), and the
package's descriptor is pointed at them.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "camtrap-dp-1.0.2"
TABLES = ("deployments", "media", "observations")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test's output stays the test's
        pass


@contextlib.contextmanager
def _served(folder: Path):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def validate_package(package: Path, work: Path):
    """frictionless's report for ``package`` (a folder with datapackage.json) against Camtrap DP 1.0.2."""
    import frictionless

    if not SHARED.is_dir():
        raise FileNotFoundError(f"the Camtrap DP reference files are missing: {SHARED}")
    site = work / "site"
    (site / "1.0.2").mkdir(parents=True)
    with _served(site) as base:
        profile = (SHARED / "camtrap-dp-profile.json").read_text()
        profile = profile.replace("https://specs.frictionlessdata.io/schemas/data-package.json",
                                  f"{base}/1.0.2/data-package.json")
        profile = profile.replace("http://json.schemastore.org/geojson.json", f"{base}/1.0.2/geojson.json")
        (site / "1.0.2" / "camtrap-dp-profile.json").write_text(profile)
        shutil.copy(SHARED / "frictionless-data-package-1.0.json", site / "1.0.2" / "data-package.json")
        shutil.copy(SHARED / "geojson.json", site / "1.0.2" / "geojson.json")
        for table in TABLES:
            shutil.copy(SHARED / f"{table}-table-schema.json", site / "1.0.2" / f"{table}-table-schema.json")
        copy = work / "package"
        shutil.copytree(package, copy)
        descriptor = json.loads((copy / "datapackage.json").read_text())
        descriptor["profile"] = f"{base}/1.0.2/camtrap-dp-profile.json"
        for resource in descriptor["resources"]:
            if resource["name"] in TABLES:  # the standard's example adds a table of its own: left as it is
                resource["schema"] = f"{base}/1.0.2/{resource['name']}-table-schema.json"
        (copy / "datapackage.json").write_text(json.dumps(descriptor))
        return frictionless.validate(str(copy / "datapackage.json"))


def error_lines(report) -> list[str]:
    """The report's errors, one line each (for an assertion message)."""
    lines = [f"package: {e.message}" for e in report.errors]
    for task in report.tasks:
        lines += [f"{task.name}: {e.message}" for e in task.errors]
    return lines
