"""Errors of the model layer.

All subclass `LLMError(ValueError)`, so old `except ValueError` clauses still catch them and the
CLI can turn each into one line and exit code 2.
"""


class LLMError(ValueError):
    """A model could not be used as asked: bad input, bad model file, or a failing server."""


class ModelLoadError(LLMError):
    """A model folder, checkpoint or adapter is missing or unreadable."""


class ServerError(LLMError):
    """An OpenAI-compatible server could not be reached or answered something unusable."""
