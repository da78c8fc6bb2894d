"""Background websocket pings (a Prefect client's event stream) leave the global ``random`` state alone,
so Hypothesis never sees it change while a strategy draws (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import websockets.asyncio.connection
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve


def _ping_fast_until(stop: threading.Event, pinging: threading.Event) -> None:
    async def main() -> None:
        async def sink(ws: ServerConnection) -> None:
            async for _ in ws:
                pass

        async with serve(sink, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", ping_interval=0.002) as ws:
                await ws.ping()
                pinging.set()
                while not stop.is_set():
                    await asyncio.sleep(0.01)

    asyncio.run(main())


def test_websocket_keepalive_pings_leave_the_global_random_state_alone() -> None:
    stop, pinging = threading.Event(), threading.Event()
    thread = threading.Thread(target=_ping_fast_until, args=(stop, pinging), daemon=True)
    thread.start()
    try:
        assert pinging.wait(10), "the websocket did not connect"
        own = websockets.asyncio.connection.random
        assert own is not random, "tests/conftest.py gave websockets no generator of its own"
        before, own_before = random.getstate(), own.getstate()
        time.sleep(0.3)  # ~150 keepalive pings
        after, own_after = random.getstate(), own.getstate()
    finally:
        stop.set()
        thread.join(10)
    assert own_before != own_after, "no keepalive ping was sent: the test proved nothing"
    assert before == after
