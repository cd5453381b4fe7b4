"""Errors shared across the package, in a module that imports nothing: raising one does not make a module
depend on the code that defines the checks (softpick.stages.code follows every import)."""


class ConfigError(ValueError):
    """A configuration key, type or value is wrong; the message names it."""
