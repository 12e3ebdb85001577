"""Ports and servers on 127.0.0.1: a free port, an ASGI app under a real uvicorn in a thread, and a client
that sends a request and hangs up."""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def uvicorn_thread(app: Any, *, start_timeout: float = 30.0) -> Iterator[str]:
    """``app`` under uvicorn on 127.0.0.1 in a background thread; yields its URL once it listens.

    The socket is bound before uvicorn starts, so no other process can take the port in between.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def post_then_hang_up(url: str, body: dict[str, Any], until: Callable[[], object]) -> None:
    """Send ``body`` to ``url``'s ``/invocations`` whole on a raw socket, call ``until()`` (the server
    queues it meanwhile), then close the connection without reading the answer."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    head = (f"POST /invocations HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(head + data)
        until()
