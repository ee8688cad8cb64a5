"""Allocator: splits capital across strategies (equal weights to start), publishes `alloc` and keeps
the current allocation in Redis; each change is stored with its reason."""
from __future__ import annotations

import json
import time

from core.allocation import equal_weights
from core.config import Settings
from core.messages import Allocation
from core.service import Service, main


class Allocator(Service):
    background = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("allocator", settings)

    def setup(self) -> None:
        self.publisher("allocator.pub")
        self.weights = equal_weights(self.settings.strategies)
        self.reason = "equal weights until the first validation cycle"
        last = self.store.scalar("SELECT weights FROM allocations ORDER BY id DESC LIMIT 1")
        current = {k: str(v) for k, v in self.weights.items()}
        if last is None or json.loads(last) != current:
            self.store.insert_many("allocations", ("event_time", "weights", "reason", "created_at"),
                                   [(self.event_time, json.dumps(current), self.reason, time.time())])
            self.log.info("allocation_changed", weights=current, reason=self.reason)
        self.publish()
        self.loop.every(5.0, self.publish)

    def publish(self) -> None:
        """Republished so late joiners converge; the stored history only records changes."""
        self.hot.put("alloc", {"weights": {k: str(v) for k, v in self.weights.items()}, "reason": self.reason})
        self.pub.publish(b"alloc", Allocation(weights=self.weights, reason=self.reason, et=self.event_time))


if __name__ == "__main__":
    main(Allocator)
