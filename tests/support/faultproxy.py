"""A loopback TCP front for a real server (a Unix socket or host:port) that can be cut.

While cut, every open connection is reset and new ones are reset on accept: the client sees the
server gone (connection refused/reset), as during an engine or apiserver restart. ``restore()``
lets connections through again. ``drop_first=N`` resets the first N connections only (a flaky
link that recovers by itself). TLS passes through untouched (the proxy only copies bytes).
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator

_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class FaultProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str, drop_first: int = 0) -> None:
        """``upstream``: ``unix:///path`` or ``host:port``; ``drop_first``: connections to reset first."""
        self.upstream = upstream
        self.drop_first = drop_first
        self.attempts = 0  # connections accepted, dropped or piped
        self.cut_now = threading.Event()
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.served = 0  # connections piped
        self.sent = 0  # chunks the clients sent (about one per request on a kept-alive connection)
        super().__init__(("127.0.0.1", 0), _Pipe)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    @property
    def url(self) -> str:
        """The address as a Docker client's ``DOCKER_HOST``."""
        return f"tcp://{self.address}"

    def connect_upstream(self) -> socket.socket:
        if self.upstream.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(self.upstream.removeprefix("unix://"))
            return sock
        host, _, port = self.upstream.rpartition(":")
        return socket.create_connection((host, int(port)), timeout=10)

    def cut(self) -> None:
        """Reset every open connection; reset new ones until :meth:`restore`."""
        self.cut_now.set()
        with self.lock:
            for sock in list(self.open):
                reset(sock)
            self.open.clear()

    def restore(self) -> None:
        self.cut_now.clear()


def reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    with contextlib.suppress(OSError):
        sock.close()


class _Pipe(socketserver.BaseRequestHandler):
    server: FaultProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        with self.server.lock:
            self.server.attempts += 1
            dropped = self.server.attempts <= self.server.drop_first
        if dropped or self.server.cut_now.is_set():
            reset(client)
            return
        try:
            upstream = self.server.connect_upstream()
        except OSError:
            reset(client)
            return
        with self.server.lock:
            self.server.open.add(client)
            self.server.served += 1
        pair = {client: upstream, upstream: client}
        try:
            while not self.server.cut_now.is_set():
                ready, _, _ = select.select(list(pair), [], [], 0.5)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        self.server.sent += 1
                    pair[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self.server.lock:
                self.server.open.discard(client)
            reset(upstream)
            reset(client)


@contextlib.contextmanager
def fault_proxy(upstream: str, drop_first: int = 0) -> Iterator[FaultProxy]:
    server = FaultProxy(upstream, drop_first)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.cut()
        server.shutdown()
        server.server_close()
