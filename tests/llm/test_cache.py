"""`request_key` canonicalisation and the SQLite `ResponseCache`."""

from __future__ import annotations

import sqlite3

import pytest

from verticals.llm.cache import ResponseCache, request_key
from verticals.llm.errors import LLMError

BASE = {"model": "m", "kind": "chat", "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0, "max_tokens": 16, "stop": ["\n"]}


def test_request_key_is_a_sha256_hex() -> None:
    key = request_key(BASE)
    assert len(key) == 64 and int(key, 16) >= 0


def test_request_key_ignores_dict_order() -> None:
    reordered = dict(reversed(list(BASE.items())))
    reordered["messages"] = [{"content": "hi", "role": "user"}]
    assert list(reordered) != list(BASE)
    assert request_key(reordered) == request_key(BASE)


def test_request_key_integral_floats_match_ints() -> None:
    assert request_key({**BASE, "temperature": 0.0}) == request_key(BASE)
    assert request_key({**BASE, "top_p": 1.0}) == request_key({**BASE, "top_p": 1})
    assert request_key({**BASE, "temperature": 0.5}) != request_key(BASE)


def test_request_key_tuples_match_lists() -> None:
    assert request_key({**BASE, "stop": ("\n",)}) == request_key(BASE)


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "user", "content": "hi!"}]},
    {"messages": [{"role": "system", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]},
    {"model": "other"},
    {"kind": "choices"},
    {"max_tokens": 17},
    {"stop": []},
])
def test_request_key_changes_with_the_request(change) -> None:
    assert request_key({**BASE, **change}) != request_key(BASE)


def test_request_key_rejects_unserialisable_values() -> None:
    with pytest.raises(TypeError):
        request_key({**BASE, "obj": object()})


def test_put_get_round_trip(tmp_path) -> None:
    cache = ResponseCache(tmp_path / "sub" / "c.sqlite")
    assert (tmp_path / "sub" / "c.sqlite").is_file()
    assert cache.get("absent") is None
    assert len(cache) == 0
    values = {"a": "text reply", "b": [-0.25, -1.5], "c": {"nested": [1, "x"]}, "d": "ünïcode ✓"}
    cache.put_many(values)
    assert len(cache) == 4
    for key, value in values.items():
        assert cache.get(key) == value
    assert cache.get_many(["a", "zzz", "b", "a"]) == {"a": values["a"], "b": values["b"]}
    cache.put_many({"a": "replaced"})
    assert cache.get("a") == "replaced" and len(cache) == 4
    cache.close()


def test_get_many_over_many_keys(tmp_path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put_many({f"k{i}": i for i in range(1200)})
    found = cache.get_many([f"k{i}" for i in range(0, 1300, 1)])
    assert found == {f"k{i}": i for i in range(1200)}
    cache.close()


def test_values_survive_reopening(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    key = request_key(BASE)
    first = ResponseCache(path)
    first.put_many({key: "Paris", "probs": [0.1, 0.9]})
    first.close()
    second = ResponseCache(path)
    assert second.get(key) == "Paris"
    assert second.get("probs") == [0.1, 0.9]
    assert len(second) == 2
    second.close()


def test_committed_values_are_visible_to_another_connection(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    writer = ResponseCache(path)
    writer.put_many({"k": "v"})
    reader = ResponseCache(path)  # e.g. a resumed run while the first process still holds the file
    assert reader.get("k") == "v"
    writer.close()
    reader.close()


def test_corrupt_file_raises_with_the_path(tmp_path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"this is not a sqlite database at all" * 100)
    with pytest.raises(LLMError) as info:
        ResponseCache(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_unwritable_location_raises(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LLMError, match="file"):
        ResponseCache(blocker / "c.sqlite")  # parent is a file, not a folder


def test_default_cache_lives_under_the_cache_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VERTICALS_CACHE_DIR", str(tmp_path / "home"))
    cache = ResponseCache.default()
    assert cache.path == tmp_path / "home" / "responses.sqlite"
    assert cache.path.is_file()
    cache.close()


WRITER = """
import sys
from verticals.llm.cache import ResponseCache
cache = ResponseCache(sys.argv[1])
for i in range(100000):
    cache.put_many({f"{i}-{j}": {"row": i, "values": [j] * 50} for j in range(20)})
    if i == 5:
        print("ready", flush=True)
"""


def test_a_killed_writer_leaves_every_committed_batch_whole(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "c.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    writer.send_signal(signal.SIGKILL)  # no chance to clean up, as with a power cut of the process
    writer.wait(timeout=30)
    cache = ResponseCache(path)
    assert len(cache) >= 120
    assert len(cache) % 20 == 0  # each put_many is all or nothing
    rows = len(cache) // 20
    stored = cache.get_many([f"{i}-{j}" for i in range(rows) for j in range(20)])
    assert len(stored) == len(cache)
    assert stored[f"{rows - 1}-19"] == {"row": rows - 1, "values": [19] * 50}
