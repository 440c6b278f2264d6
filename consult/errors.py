"""The one exception type that the command line turns into a single clear line."""


class ConsultError(Exception):
    """A problem a user can fix: the message names the file, row or value and what is wrong with it."""
