"""Local paths and object-store URIs behind one small interface.

A cluster keeps its images in object storage (``s3://``, ``gs://``) while a laptop and the tests use
local folders. Every job reads and writes through these helpers, so the pipeline code never branches on
where the bytes live. fsspec resolves the URI scheme; local writes go through a temporary file and an
atomic rename, so a job killed mid-write never leaves a half-written output that a resumed run would
mistake for a finished one (object stores give the same guarantee per object).
"""

from __future__ import annotations

import os
import posixpath
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` paths other than ``file://``."""
    return "://" in str(path) and not str(path).startswith("file://")


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` for URIs and the OS separator for local paths."""
    base = str(base)
    if is_uri(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def get_fs(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and the path inside it."""
    fs, inner = fsspec.core.url_to_fs(str(path))
    return fs, inner


def read_bytes(path: str) -> bytes:
    fs, inner = get_fs(path)
    return fs.cat_file(inner)


def exists(path: str) -> bool:
    fs, inner = get_fs(path)
    return fs.exists(inner)


def makedirs(path: str) -> None:
    fs, inner = get_fs(path)
    fs.makedirs(inner, exist_ok=True)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` so that readers see either nothing or the whole file."""
    fs, inner = get_fs(path)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(inner) or ".", exist_ok=True)
        tmp = f"{inner}.tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, inner)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        fs.pipe_file(inner, data)


def _normalized(path: str) -> str:
    """A comparable form of a path or URI: real, absolute local paths; URIs without a trailing slash."""
    path = str(path)
    if is_uri(path):
        return path.rstrip("/")
    return os.path.realpath(os.path.abspath(path.removeprefix("file://")))


def is_within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies inside it (symlinks resolved for local paths)."""
    p, r = _normalized(path), _normalized(root)
    if is_uri(p) != is_uri(r):
        return False
    sep = "/" if is_uri(p) else os.sep
    return p == r or p.startswith(r.rstrip(sep) + sep)


def frame_bytes(frame, fmt: str) -> bytes:
    """A pandas frame as Parquet or CSV bytes, for :func:`write_bytes_atomic`."""
    import io

    if fmt == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return buf.getvalue()
    return frame.to_csv(index=False).encode()


class OutsideFolderError(OSError):
    """A path inside a folder that resolves (through a symbolic link) to somewhere outside it."""


#: Set to "1" to let file names follow links out of the images folder (datasets assembled from links).
FOLLOW_LINKS_ENV = "CAMTRAP_FOLLOW_LINKS"


def read_inside(root: str, name: str) -> bytes:
    """The bytes of ``root/name``, refusing a local path that a link leads outside ``root``.

    The data contract keeps ``name`` relative and free of ``..``; a symbolic link inside the images
    folder could still lead anywhere on the host, and its target would be read (and prepared into the
    output) as if it were the dataset's. Object stores have no links. ``CAMTRAP_FOLLOW_LINKS=1`` (or
    ``prepare.py --follow-links``) allows them.
    """
    path = join(root, name)
    if not is_uri(path) and os.environ.get(FOLLOW_LINKS_ENV) != "1" and not is_within(path, root):
        raise OutsideFolderError(
            f"{name} leads outside the images folder (to {os.path.realpath(path)}) through a symbolic link; "
            f"use --follow-links to allow links"
        )
    return read_bytes(path)
