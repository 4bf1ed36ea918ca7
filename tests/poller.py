"""A background loop that calls `poll()` every `interval` seconds: what the two stand-ins (the training
operator, cluster DNS) share, as controllers do with their resync period."""

from __future__ import annotations

import threading


class Poller:
    interval: float = 0.5

    def poll(self) -> None:
        raise NotImplementedError

    def start_polling(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None:
            self._stop.set()
            thread.join(timeout=30)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
