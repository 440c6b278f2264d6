"""The one exception type that the command line turns into a single clear line."""

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class ConsultError(Exception):
    """A problem a user can fix: the message names the file, row or value and what is wrong with it."""


def find_cause(error: BaseException, cause_type: type[E]) -> E | None:
    """The first exception of ``cause_type`` in ``error``'s chain of causes and contexts (itself included)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, cause_type):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
