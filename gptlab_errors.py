"""The one error type users see.

Library code raises :class:`UserError` for anything a user can fix (a bad config value, a missing file,
a prompt the tokenizer cannot encode). Entry points catch it with :func:`exit_on_user_error`, print one
line and exit with status 2, so a user never reads a traceback for their own mistake.
"""

from __future__ import annotations

import functools
import sys


class UserError(ValueError):
    """A problem the user can fix; the message is one line that says what to do."""


def exit_on_user_error(fn):
    """Decorator for entry points: turn a UserError into `error: <message>` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
