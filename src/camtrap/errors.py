"""The one base class of errors a user can fix (a bad file, path, setting), and how jobs report them.

Job scripts print these as a one-line ``error: ...`` that names the file, row or field and the reason,
and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class InputError(ValueError):
    """Bad input or settings, with a message that names the file, row or field and the reason."""


def exits_on_input_error(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a job's ``main``: an :class:`InputError` becomes ``error: ...`` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper
