"""One background thread that enforces total deadlines on blocking sockets.

A socket read timeout bounds the silence between two bytes, not the time a read sequence
takes: a server that trickles its status line and headers one byte at a time never trips
it, and `http.client` would wait for hours. The sync transport registers the socket
while it waits for the response headers and while it reads the body; when the call's
deadline passes first, the watchdog shuts the socket down, which wakes the blocked read.

Costs one lock round trip per request; the thread starts on first use and is recreated
after a fork (threads do not survive one).
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import sys
import threading
import time

__all__ = ["Watch", "watchdog"]


class Watch:
    """A registered socket; `fired` tells whether its deadline passed first."""

    __slots__ = ("active", "deadline", "fired", "sock")

    def __init__(self, deadline: float, sock: socket.socket) -> None:
        self.deadline = deadline
        self.sock = sock
        self.active = True
        self.fired = False


class _Watchdog:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._cancelled = 0  # cancelled entries still in the heap
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, sock: socket.socket) -> Watch:
        """Shut `sock` down at `deadline` (`time.monotonic`) unless cancelled before."""
        if self._pid != os.getpid():
            self._reset()
        entry = Watch(deadline, sock)
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._order), entry))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="chatlib-watchdog", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is entry:
                self._cond.notify()
        return entry

    def cancel(self, entry: Watch) -> None:
        """Forget `entry`; it will not fire (it is dropped lazily from the queue)."""
        if sys.is_finalizing():
            # At interpreter exit the daemon thread is frozen, possibly holding the lock (a
            # stream closed by the last garbage collection hung the exit here): nothing will
            # fire any more, so there is nothing to wait for.
            entry.active = False
            return
        with self._cond:
            if not entry.active:
                return
            entry.active = False
            entry.sock = None  # type: ignore[assignment]  # don't keep the socket alive
            self._cancelled += 1
            # Most calls end long before their deadline: rebuild the heap now and then, so
            # it holds about as many entries as there are calls in flight.
            if self._cancelled > 64 and 2 * self._cancelled > len(self._heap):
                self._heap = [item for item in self._heap if item[2].active]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and not self._heap[0][2].active:
                    heapq.heappop(self._heap)
                    self._cancelled = max(0, self._cancelled - 1)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, entry = heapq.heappop(self._heap)
                entry.active = False
                entry.fired = True
                try:
                    entry.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed: nothing left to wake


watchdog = _Watchdog()
