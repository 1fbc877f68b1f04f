"""The one exception type the zoo raises for user-facing problems."""


class ZooError(ValueError):
    """A problem the user can fix: the message says what was wrong and what to do."""
