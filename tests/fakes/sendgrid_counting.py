"""The fake SendGrid (tests/fakes/sendgrid_server.py) for large sends: no bodies kept, every
accepted address counted, and each accepted request's arrival time and size remembered, so
a test can check exactly-once by address and the rate the server saw."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.fakes.sendgrid_server import FakeSendGrid, Received, _Handler, _Server


@dataclass
class CountingSendGrid(FakeSendGrid):
    # (monotonic time the body arrived, how many recipients it carried), accepted ones only
    arrivals: list[tuple[float, int]] = field(default_factory=list)

    def record(self, received: Received, accepted: bool) -> None:
        super().record(received, accepted)
        if accepted and isinstance(received.body, dict):
            with self.lock:
                self.arrivals.append((time.monotonic(), len(received.body["personalizations"])))

    def most_in_window(self, seconds: float) -> int:
        """The most recipients accepted within any `seconds`-long window (sliding)."""
        with self.lock:
            arrivals = sorted(self.arrivals)
        most, total, first = 0, 0, 0
        for moment, count in arrivals:
            total += count
            while arrivals[first][0] <= moment - seconds:
                total -= arrivals[first][1]
                first += 1
            most = max(most, total)
        return most


@contextmanager
def running(api_key: str) -> Iterator[CountingSendGrid]:
    """Serve a counting fake on an ephemeral loopback port for the duration of the block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    url = f"http://127.0.0.1:{server.server_port}"
    server.fake = CountingSendGrid(api_key=api_key, url=url, keep_bodies=False)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.fake
    finally:
        server.fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join()
