"""The one exception type the command-line tools turn into a single-line message."""


class UserError(Exception):
    """A problem the user can fix: bad input, missing files, an unreachable data source.

    The message says what is wrong and what to do; the CLIs print it without a traceback.
    """
