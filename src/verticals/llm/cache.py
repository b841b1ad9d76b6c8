"""A SQLite cache of model requests and answers, shared by every backend.

A re-run, or a run resumed after an interrupt, never pays twice for the same request. Keys are
the SHA-256 of canonical JSON over everything that changes an answer (model fingerprint, request
kind, messages, output-affecting parameters, schema version), as in lmms-eval's response cache.
Only deterministic requests are stored (the caller decides). Each `put_many` is one transaction
in WAL mode, so a killed process leaves every committed answer readable and nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from verticals.config import cache_home
from verticals.llm.errors import LLMError

SCHEMA_VERSION = 1


def request_key(payload: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of `payload` (sorted keys; integral floats written as ints)."""
    canonical = _integral({"schema": SCHEMA_VERSION, **payload})
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, default=_canonical)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _integral(value: Any) -> Any:
    """Write 0.0 as 0 (and 1.0 as 1) so `temperature=0` and `temperature=0.0` share a key."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_integral(v) for v in value]
    return value


def _canonical(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"cannot put {type(value).__name__} in a cache key")


class ResponseCache:
    """Request-to-answer store in one SQLite file.

    Args:
        path (`str` or `Path`): the database file; its folder is created if missing.

    Example:
        >>> import tempfile, pathlib
        >>> cache = ResponseCache(pathlib.Path(tempfile.mkdtemp()) / "c.sqlite")
        >>> key = request_key({"model": "m", "prompt": "hi"})
        >>> cache.put_many({key: "hello"})
        >>> cache.get(key)
        'hello'
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()
        except (sqlite3.DatabaseError, OSError) as err:
            raise LLMError(f"cannot open the response cache {self.path}: {err}; "
                           "delete it or choose another path") from err

    @classmethod
    def default(cls) -> ResponseCache:
        """The cache under `verticals.config.cache_home()`."""
        return cls(cache_home() / "responses.sqlite")

    def get(self, key: str) -> Any | None:
        """The stored answer for `key`, or None."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Stored answers for those of `keys` that are present."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk)
                found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, items: Mapping[str, Any]) -> None:
        """Store answers in one transaction (all or none)."""
        rows = [(k, json.dumps(v)) for k, v in items.items()]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database (pending transactions are already committed)."""
        with self._lock:
            self._db.close()
