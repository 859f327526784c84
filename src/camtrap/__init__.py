"""camtrap: camera-trap species classifiers on Ray, from a laptop to an autoscaling GPU cluster."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("camtrap")
except PackageNotFoundError:  # a source checkout on PYTHONPATH without an install
    __version__ = "0+unknown"
