"""What the run service refuses: a state that does not allow the action, a run that does not exist."""


class RunStateError(ValueError):
    """The run's state does not allow what was asked (cancel, retry), or its file is gone."""


class RunNotFound(RunStateError):
    """There is no run with this id."""
