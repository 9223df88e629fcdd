"""The one exception type for bad user input, caught at the CLI edge and turned into exit code 2."""


class ConfigError(ValueError):
    """A user-supplied value is invalid; the message names the value and what is allowed."""
