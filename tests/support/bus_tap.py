"""A subscriber to everything every publisher of a mesh sends, looking for given byte strings in the raw
frames as they come (MessagePack keeps strings as they are), and counting the topics it saw."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

import zmq


class BusTap:
    def __init__(self, endpoints: Iterable[str], wanted: Iterable[bytes]) -> None:
        self.wanted = list(wanted)
        self.topics: Counter[bytes] = Counter()
        self.found: list[tuple[bytes, bytes]] = []  # (topic, what was found in its frame)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        for endpoint in endpoints:
            self._sock.connect(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bus-tap", daemon=True)
        self._thread.start()

    def seen(self, prefix: bytes) -> int:
        """How many frames of topics starting with `prefix` went by."""
        return sum(n for topic, n in list(self.topics.items()) if topic.startswith(prefix))

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(100):
                continue
            frames = self._sock.recv_multipart()
            self.topics[frames[0]] += 1
            raw = b"".join(frames)
            self.found.extend((frames[0], wanted) for wanted in self.wanted if wanted in raw)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close(0)
        self._ctx.term()
