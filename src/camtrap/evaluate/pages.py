"""A report folder: the names of its files, and the Jinja2 templates its HTML pages are rendered from.

Every name the report writes or links exists here once, so a page cannot link a file under a name
another module writes it under. (``per_class.csv`` and ``summary.json`` are
:func:`camtrap.evaluate.submission.write_report`'s, which ``evaluate.py`` writes on its own too.)

The pages are templates under ``camtrap/evaluate/templates/`` with autoescaping on: seq_ids, file names
and paths come from users' files, and a ``<`` or ``&`` in one must show as text, never as markup. A
template that uses a variable it was not given fails at once (``StrictUndefined``) instead of rendering
an empty string into a page.
"""

from __future__ import annotations

import functools

import jinja2

CURVES_PNG = "curves.png"
PER_CLASS_PNG = "per_class.png"
GALLERY_HTML = "gallery.html"
GALLERY_PNG = "gallery.png"
GALLERY_CSV = "gallery.csv"
#: Thumbnails of the gallery's frames, relative to the report folder.
GALLERY_DIR = "gallery"
INDEX_HTML = "index.html"

TEMPLATE_PACKAGE = "camtrap.evaluate"
TEMPLATE_DIR = "templates"


@functools.cache
def _environment() -> jinja2.Environment:
    """One environment per process: it caches compiled templates, and every page is HTML."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(TEMPLATE_PACKAGE, TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_page(template: str, **context: object) -> str:
    """Render one page; every value in ``context`` is escaped unless marked safe.

    Args:
        template: A file name under ``camtrap/evaluate/templates/``.
        **context: The template's variables; each one it uses must be given.
    """
    return _environment().get_template(template).render(**context)
