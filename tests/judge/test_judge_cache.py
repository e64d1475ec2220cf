from __future__ import annotations

import threading
from pathlib import Path

from slate.judge.cache import JudgeCache, cache_key

MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def test_key_depends_on_model_messages_and_params() -> None:
    key = cache_key("m", MESSAGES, {"temperature": 0.0, "max_tokens": 10})
    assert key == cache_key("m", [dict(m) for m in MESSAGES], {"max_tokens": 10, "temperature": 0.0})  # order-free
    assert len(key) == 64
    assert key != cache_key("m2", MESSAGES, {"temperature": 0.0, "max_tokens": 10})
    assert key != cache_key("m", [*MESSAGES[:1], {"role": "user", "content": "u "}], {"temperature": 0.0,
                                                                                     "max_tokens": 10})
    assert key != cache_key("m", MESSAGES, {"temperature": 0.0, "max_tokens": 11})


def test_hit_miss_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "judge.sqlite"
    key = cache_key("m", MESSAGES, {"temperature": 0.0})
    other = cache_key("m", MESSAGES, {"temperature": 0.5})
    cache = JudgeCache(path)
    assert cache.get(key) is None
    cache.put(key, "reply <score>1</score>")
    assert cache.get(key) == "reply <score>1</score>"
    assert cache.get(other) is None  # different parameters miss
    assert (cache.hits, cache.misses, len(cache)) == (1, 2, 1)
    cache.close()
    reopened = JudgeCache(path)
    assert reopened.get(key) == "reply <score>1</score>"
    assert (reopened.hits, reopened.misses) == (1, 0)


def test_threads_share_one_cache(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "c.sqlite")

    def work(worker: int) -> None:
        for i in range(50):
            cache.put(f"{worker}-{i}", str(i))
            assert cache.get(f"{worker}-{i}") == str(i)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 200 and cache.hits == 200
