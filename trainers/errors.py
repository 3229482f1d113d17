"""The one error type for bad input: its message names the problem and the fix."""


class ConfigError(ValueError):
    """A bad configuration value; the message names the problem and the fix."""
