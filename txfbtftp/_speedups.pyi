"""The compiled twin of a download's DATA hot path (txfbtftp/_speedups.c)."""
from collections.abc import Callable
from typing import Any

class Lane:
    """One download's whole-window ACKs, served without Python."""

    def __init__(self, session: Any, machine: Any, reader: Any, fd: int, dest: tuple[Any, ...],
                 handler: Callable[[bytes, tuple[Any, ...]], None], sender: Any, transfer: Any) -> None: ...
    def drain(self, limit: int, failed: Callable[[BaseException, None], object]
              ) -> tuple[list[tuple[Callable[[Any, Any], object], Any, Any]], int, bool]:
        """Serve what already waits on the socket, up to ``limit``
        datagrams, stopping after one handed back; the calls Python must
        make, how many datagrams were read, and whether to go on."""

def serve(events: list[tuple[int, int]], lanes: dict[int, Lane], failed: Callable[[BaseException, None], object]
          ) -> tuple[list[tuple[int, int]], list[tuple[Callable[[Any, Any], object], Any, Any]]]:
    """Serve the events of ``lanes``' sockets; the other events, and the
    calls Python must make (a datagram handed back, a timer to re-arm)."""

def park(epfd: int, other: int, lanes: dict[int, Lane], failed: Callable[[BaseException, None], object],
         timeout: float) -> tuple[list[tuple[int, int]], list[tuple[Callable[[Any, Any], object], Any, Any]], int]:
    """Sleep on ``epfd`` and ``other`` (the reactor's epoll) at most
    ``timeout`` seconds, serving ``lanes``' datagrams meanwhile, until Python
    has work; the events of other descriptors, the calls Python must make,
    and how many datagrams the lanes took."""
