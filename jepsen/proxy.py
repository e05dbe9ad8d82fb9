"""Partitions without root: a blackholing TCP proxy in front of every node's peer port.

Node B's peers dial B's *advertised* peer port, where this proxy listens and forwards to B's real
peer port. To tell which node opened a connection (they all come from 127.0.0.1), the proxy
looks the client's port up in /proc/net/tcp and finds the node process owning that socket inode
(allowed for our own processes without root). A partition then blackholes per link: bytes from a
node the receiver holds a grudge against are held back (connections stay open and stall, as
TCP does while its segments are dropped) and flow again when the partition heals.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["PeerProxies"]


def _inode_of_port(port: int) -> str | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port:
                return f[9]
    return None


def _owner(inode: str, pids: dict[int, str]) -> str | None:
    target = f"socket:[{inode}]"
    for pid, name in pids.items():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return name
        except OSError:
            continue
    return None


class PeerProxies:
    """One listening proxy per node; ``grudge[receiver]`` = senders whose bytes are dropped."""

    def __init__(self, pids: Callable[[], dict[int, str]]) -> None:
        self._pids = pids
        self.grudge: dict[str, set[str]] = {}
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()

    def add(self, name: str, listen_port: int, target_port: int) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", listen_port))
        srv.listen(64)
        self._socks.append(srv)
        threading.Thread(
            target=self._accept, args=(srv, name, target_port), daemon=True, name=f"proxy-{name}"
        ).start()

    def close(self) -> None:
        self._stop.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()

    def _dropped(self, src: str | None, dst: str) -> bool:
        return src is not None and src in self.grudge.get(dst, set())

    def _accept(self, srv: socket.socket, dst: str, target_port: int) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = srv.accept()
            except OSError:
                return
            inode = _inode_of_port(addr[1])
            src = _owner(inode, self._pids()) if inode else None
            try:
                up = socket.create_connection(("127.0.0.1", target_port), timeout=2)
                up.settimeout(None)
            except OSError:
                conn.close()
                continue
            self._socks.extend([conn, up])
            threading.Thread(target=self._pump, args=(conn, up, src, dst), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn, dst, src), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, src: str | None, dst: str | None) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                # Blackholed: hold the bytes, as TCP would keep retransmitting dropped segments.
                # (Discarding them would corrupt the HTTP/2 framing of the stream.)
                while dst is not None and self._dropped(src, dst) and not self._stop.is_set():
                    self._stop.wait(0.05)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
