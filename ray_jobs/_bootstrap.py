"""Make ``camtrap`` importable when the job runs from a source checkout (``ray job submit --working-dir .``).

On a cluster node the project is not pip-installed; the working directory is, so ``src/`` is put on
``sys.path``. ``camtrap.runtime.init_ray`` then ships the package to the workers.
"""

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
try:
    import camtrap  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))
