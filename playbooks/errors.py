"""Errors for bad user input (playbooks, constraints): the message names the field and the fix."""


class PlaybookError(ValueError):
    """A playbook that cannot be run as written."""


class ConstraintError(ValueError):
    """Constraints that name an unknown field or an impossible value."""
