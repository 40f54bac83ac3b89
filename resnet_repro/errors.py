import inspect


class UserError(Exception):
    """A mistake the user can fix (bad setting, missing data, bad checkpoint).

    The command-line entry point prints the message, without a traceback, and exits non-zero.
    The message says what was wrong and what to do instead.
    """


class HandedOn(UserError):
    """Rank 0's mistake, raised on another rank so that no rank waits for one that stopped.
    Rank 0 reports it; the other ranks say nothing more."""


def check_keys(fn, group: str, kwargs: dict) -> None:
    """A config group's keys are fn's arguments: name any it does not take, and the ones it does."""
    try:
        inspect.signature(fn).bind_partial(**kwargs)
    except TypeError:
        params = inspect.signature(fn).parameters
        unknown = sorted(set(kwargs) - set(params))
        raise UserError(
            f"{group} has no setting {', '.join(unknown) or kwargs}; its settings are "
            f"{', '.join(p for p in params if p not in ('self', 'params'))}."
        ) from None
