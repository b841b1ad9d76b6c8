"""The one place that reads the environment.

Every path or setting that a user may change without code is resolved here, on call,
never at import, so tests can point it elsewhere with `monkeypatch.setenv`.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "VERTICALS_CACHE_DIR"
API_KEY_ENV = "OPENAI_API_KEY"


def cache_home() -> Path:
    """Folder for converted checkpoints and the response cache.

    `$VERTICALS_CACHE_DIR` if set, else `$XDG_CACHE_HOME/verticals`, else `~/.cache/verticals`.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "verticals"


def read_env(name: str) -> str | None:
    """Read one environment variable (API keys come through here, never through files)."""
    value = os.environ.get(name)
    return value or None
