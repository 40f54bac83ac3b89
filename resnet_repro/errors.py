"""The errors a user can act on, and the check of a config group's keys."""

import inspect

# How a run ends (documented in the README): 0 done, or finished before; 1 stopped by a fault
# (a loss that is not finite, a checkpoint that could not be written, a rank that was lost);
# 2 a mistake in the settings, the data or the run directory, found before training; 130
# stopped by a signal (Ctrl-C, SIGTERM, preemption) with a checkpoint saved: run the same
# command to resume. A sweep ends with the first of 2, 130, 1 that a run of it ended with.
DONE, FAULT, MISTAKE, STOPPED = 0, 1, 2, 130


class UserError(Exception):
    """A mistake the user can fix (bad setting, missing data, bad checkpoint).

    The command-line entry point prints the message, without a traceback, and exits non-zero.
    The message says what was wrong and what to do instead.
    """


class HandedOn(UserError):
    """Rank 0's mistake, raised on another rank so that no rank waits for one that stopped.
    Rank 0 reports it; the other ranks say nothing more."""


def check_keys(accepts, group: str, kwargs: dict) -> None:
    """A config group's keys are the arguments of `accepts`, a function, or are `accepts`, a
    tuple of names: name any key that is not, and the ones that are."""
    if callable(accepts):
        try:
            inspect.signature(accepts).bind_partial(**kwargs)
            return
        except TypeError:
            accepts = tuple(inspect.signature(accepts).parameters)
    unknown = sorted(set(kwargs) - set(accepts))
    if unknown:
        raise UserError(
            f"{group} has no setting {', '.join(unknown)}; its settings are "
            f"{', '.join(p for p in accepts if p not in ('self', 'params'))}."
        )


# PyTorch's lines around what went wrong: its advice to load with weights_only=False, among them
ADVICE = ("weights_only", "Weights only", "Please file an issue", "Check the documentation")


def first_line(e: Exception) -> str:
    """The first line of an error that says what went wrong, without PyTorch's advice."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    line = next((ln for ln in lines if not any(a in ln for a in ADVICE)), "")
    return line or type(e).__name__
