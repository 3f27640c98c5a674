"""Errors a user can fix. The CLI prints them without a traceback."""


class UserError(Exception):
    """Bad input: the message names the file or field and says how to fix it."""


class AudioError(UserError):
    """An audio file that cannot be used."""


class RecipeError(UserError):
    """A recipe that cannot be used."""


class ManifestError(UserError):
    """A manifest line that breaks the contract of DESIGN.md."""


class CheckpointError(UserError):
    """A checkpoint folder that is not whole or holds a file that does not load."""
