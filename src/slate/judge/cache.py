"""An on-disk cache of judge replies, so re-scoring the same step with the same judge costs nothing.

Key: SHA-256 of the canonical JSON of (model, full prompt messages, request parameters) — change any of them and
the key changes. Value: the raw reply text; it is re-parsed on a hit, so a parser fix applies to cached replies.
Only replies that parsed are stored, so a garbled reply is asked again next time.

One sqlite file, one connection guarded by a lock: safe for threads and for asyncio tasks of one process (sqlite
calls are short and run inline). Several processes may share the file (WAL journal); the last write of a key wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from slate.errors import JudgeError

logger = logging.getLogger(__name__)


def cache_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of ``{"model", "messages", "params"}`` (keys sorted, no spaces)."""
    payload = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True,
                         separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    """``get(key) -> reply | None`` and ``put(key, reply)`` over a sqlite file, with hit and miss counters."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL, "
                               "created REAL NOT NULL)")
            self._conn.commit()
        except sqlite3.Error as exc:
            raise JudgeError(f"judge cache {self.path}: cannot open ({exc}). Point judge.cache_path at a writable "
                             "file, or set it to null to run without a cache.") from None

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            return str(row[0])

    def put(self, key: str, reply: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO replies (key, reply, created) VALUES (?, ?, ?)",
                               (key, reply, time.time()))
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
