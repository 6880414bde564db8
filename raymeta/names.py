"""The one name rule for everything a user names that becomes part of a path.

Experiment names, run names, table names and store partition values all pass
:func:`validate_name` before anything is written: the config loader checks them
before Ray starts, the results store before a file is written, and the library
functions that join a directory and a name (``build_trainer``,
``run_family_tuning``, ``newest_checkpoint``) before they touch the directory.

Example:
    >>> validate_name("tune-branin-1", what="experiment")
    'tune-branin-1'
    >>> validate_name("../escaped", what="run")
    Traceback (most recent call last):
    ...
    raymeta.errors.InvalidNameError: run name '../escaped' is not allowed: ...
"""

from __future__ import annotations

import re

from raymeta.errors import InvalidNameError

__all__ = ["NAME_RULE", "name_problem", "validate_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-+:@, ]{0,199}$")
NAME_RULE = (
    "use letters, digits and . _ - + : @ , or space, starting with a letter or digit "
    "(at most 200 characters, no '..')"
)


def name_problem(value: object, *, what: str) -> str | None:
    """The problem with ``value`` as a name, or None when it is safe.

    Args:
        value: A name that came from a user (experiment, run, table...).
        what: What the name is, for the message (e.g. ``"experiment"``).
    """
    if isinstance(value, str) and _NAME.fullmatch(value) and ".." not in value:
        return None
    return f"{what} name {value!r} is not allowed: {NAME_RULE}"


def validate_name(value: object, *, what: str) -> str:
    """Return ``value`` if it is a safe path component, else raise.

    Args:
        value: A name that came from a user.
        what: What the name is, for the message (e.g. ``"experiment"``).

    Raises:
        InvalidNameError: The name could escape its directory (path separators,
            ``..``, an absolute path, control characters) or is otherwise unsafe.
    """
    problem = name_problem(value, what=what)
    if problem:
        raise InvalidNameError(problem)
    return value  # type: ignore[return-value]
