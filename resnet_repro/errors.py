class UserError(Exception):
    """A mistake the user can fix (bad setting, missing data, bad checkpoint).

    The command-line entry point prints the message, without a traceback, and exits non-zero.
    The message says what was wrong and what to do instead.
    """
