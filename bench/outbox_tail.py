"""The console SMS outbox (JSON Lines) read as it grows, for the benchmarks' people reading
their codes: each read parses only the lines written since the last one. No imports beyond
the standard library, so both the eventlet benchmarks and Locust's gevent process use it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


class OutboxTail:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.offset = 0
        self.lines = 0  # complete lines read so far

    def new_messages(self) -> Iterator[tuple[int, dict]]:
        """(line number, message) of every complete line written since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for raw in data[:end].splitlines():
            self.lines += 1
            if raw.strip():
                yield self.lines, json.loads(raw)
