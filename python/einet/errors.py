"""einet's errors: one base, so that a caller (and the `einet` command) can tell what einet refuses
on purpose -- a bad value, file, setting or environment, said in one line -- from a bug.

Every refusal is also the built-in exception it always was (a ValueError or a TypeError), so code
written against those keeps working.
"""

from __future__ import annotations


class EinetError(Exception):
    """Everything einet raises on purpose about what it was given."""


class EinetValueError(EinetError, ValueError):
    """A value einet refuses: out of range, of the wrong shape, an unknown name, a malformed file."""


class EinetTypeError(EinetError, TypeError):
    """An argument of a type einet does not take."""
