"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user (a suite, a path, a name): says what is wrong and what would be valid."""
