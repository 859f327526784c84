"""The one base class of errors a user can fix (a bad file, path, setting), and how jobs report them.

Job scripts print these as a one-line ``error: ...`` that names the file, row or field and the reason,
and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable

from camtrap.config.errors import ConfigError
from camtrap.console import job_console


class InputError(ValueError):
    """Bad input or settings, with a message that names the file, row or field and the reason."""


#: Exit status of a job stopped with Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130

#: Everything a job reports as ``error: ...`` and exit 2: bad data and paths, and invalid config files
#: (whose base lives in the config layer, which imports nothing else of the package).
USER_ERRORS: tuple[type[ValueError], ...] = (InputError, ConfigError)

#: Operating-system errors a user fixes outside the program: a read-only or full output, a permission.
USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def exits_on_input_error(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a job's ``main``: a :data:`USER_ERRORS` error, or an OS error of :data:`USER_OS_ERRORS`
    (permission denied, read-only or full disk), becomes ``error: ...`` on stderr and exit status 2;
    Ctrl-C says how to resume (every job resumes by rerunning it) and exits 130, without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            with job_console():
                return main(*args, **kwargs)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            if e.errno not in USER_OS_ERRORS:
                raise
            where = f"{e.filename}: " if e.filename else ""
            print(f"error: {where}{e.strerror or e}; fix that (a writable, non-full output) and rerun the same "
                  "command to resume", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; rerun the same command to resume", file=sys.stderr)
            return INTERRUPTED

    return wrapper
