"""The one error type users see.

Library code raises :class:`UserError` for anything a user can fix (a bad config value, a missing file,
a prompt the tokenizer cannot encode). Entry points catch it with :func:`exit_on_user_error`, print one
line and exit with status 2, so a user never reads a traceback for their own mistake. A full disk is
treated the same way: it is the user's to fix, and the tools keep what they wrote before it.
"""

from __future__ import annotations

import errno
import functools
import sys

DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class UserError(ValueError):
    """A problem the user can fix; the message is one line that says what to do."""


def exit_on_user_error(fn):
    """Decorator for entry points: a UserError (or a full disk) becomes `error: <message>` and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except Exception as e:
            full = disk_full_cause(e)
            if full is None:
                raise
            print(f"error: no space left on the device (writing {full.filename or 'a file'}); free some space "
                  "and run again", file=sys.stderr)  # fmt: skip
            sys.exit(2)

    return wrapper


def disk_full_cause(e: BaseException) -> OSError | None:
    """The "no space left" OSError behind ``e`` (itself, or the cause a library wrapped it in), else None.

    Libraries re-raise a full disk as their own error (``datasets`` as DatasetGenerationError), so the
    chain of causes is searched, not just the exception itself.
    """
    seen = set()
    link: BaseException | None = e
    while link is not None and id(link) not in seen:
        if isinstance(link, OSError) and link.errno in DISK_FULL:
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def quiet_ctrl_c_while_starting() -> None:
    """Entry points call this before their slow imports: Ctrl-C then prints one line and exits 130 (no import
    traceback). They hand Ctrl-C back to Python (KeyboardInterrupt) once they are loaded and have checked the
    command line, before they write anything.

    The process ends at once (``os._exit``): an exception raised in the middle of an import can be caught by
    the importing library (torch imports numpy under a broad ``except``), which then goes on with a
    half-imported module and fails later with a traceback of its own."""
    import os
    import signal

    def stop(*_):
        print("interrupted while starting; nothing was written", file=sys.stderr, flush=True)
        os._exit(130)

    signal.signal(signal.SIGINT, stop)
