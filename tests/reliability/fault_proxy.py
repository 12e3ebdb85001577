"""A loopback TCP proxy that breaks one chosen AWS call: reset, stall or truncate.

It relays bytes between boto3 and the moto server untouched, and watches the
client's bytes for a marker that identifies the call (a SageMaker ``X-Amz-Target``
header, or an S3 or runtime request line). When armed and the marker passes:

- ``reset``: the client's connection is closed with an RST; the request never arrives;
- ``stall``: the request is forwarded, and the answer is never relayed, so the
  client's read timeout fires while the server has acted;
- ``truncate``: the request is forwarded, and only the first bytes of the answer are
  relayed before both sides are closed.

It listens on 127.0.0.1 only, relays at most 256 connections at once (100,000 over its
life), and closes everything on ``close()``; every relay ends when either side closes.
"""
from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

__all__ = ["FAULTS", "FaultProxy"]

FAULTS = ("reset", "stall", "truncate")
_TRUNCATE_AFTER = 12  # bytes of the answer that get through: part of the status line
_INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"
_MAX_OPEN = 256  # connections relayed at once; more are refused
_MAX_ACCEPTED = 100_000  # over the proxy's life


@dataclass
class _Arm:
    marker: bytes
    fault: str
    times: int | None  # None: every matching call
    injected: int = 0

    @property
    def spent(self) -> bool:
        return self.times is not None and self.injected >= self.times


@dataclass
class _Connection:
    client: socket.socket
    upstream: socket.socket
    mode: str | None = None  # None, "stall" or "truncate" once a fault hit this connection
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self, *, reset: bool = False) -> None:
        if reset:
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for sock in (self.client, self.upstream):
            if not reset:
                _wake(sock)
            try:
                sock.close()
            except OSError:
                pass
        self.closed.set()


def _wake(sock: socket.socket) -> None:
    """Shut ``sock`` down so that a thread blocked in its recv() or accept() returns (close() alone does not)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class FaultProxy:
    """``with FaultProxy(upstream_port) as proxy:``; point AWS_ENDPOINT_URL at ``proxy.url``."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._arm: _Arm | None = None
        self._connections: list[_Connection] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._accepting.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def arm(self, marker: bytes, fault: str, times: int | None = 1) -> None:
        """Break the next ``times`` calls whose request contains ``marker`` (None: all of them)."""
        if fault not in FAULTS:
            raise ValueError(fault)
        with self._lock:
            self._arm = _Arm(marker, fault, times)

    def disarm(self) -> int:
        """Stop injecting; return how many calls were broken since ``arm``."""
        with self._lock:
            injected = self._arm.injected if self._arm else 0
            self._arm = None
        return injected

    def close(self) -> None:
        _wake(self._listener)
        self._listener.close()
        self._accepting.join(5)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    def _accept(self) -> None:
        for _ in range(_MAX_ACCEPTED):
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections = [c for c in self._connections if not c.closed.is_set()]
                crowded = len(self._connections) >= _MAX_OPEN
            if crowded:
                client.close()
                continue
            threading.Thread(target=self._open, args=(client,), daemon=True).start()

    def _open(self, client: socket.socket) -> None:
        """Connect upstream for ``client`` and relay both ways (off the accept loop, which never waits)."""
        try:
            upstream = socket.create_connection(self._upstream, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        connection = _Connection(client, upstream)
        with self._lock:
            self._connections.append(connection)
        threading.Thread(target=self._answers, args=(connection,), daemon=True).start()
        self._requests(connection)

    def _fault_for(self, window: bytes) -> tuple[str | None, int]:
        """The fault to inject for a request whose bytes so far are ``window``, and where its marker ends."""
        with self._lock:
            arm = self._arm
            if arm is None or arm.spent:
                return None, 0
            at = window.find(arm.marker)
            if at < 0:
                return None, 0
            arm.injected += 1
            return arm.fault, at + len(arm.marker)

    def _requests(self, connection: _Connection) -> None:
        window = b""
        while not connection.closed.is_set():
            try:
                data = connection.client.recv(65536)
            except OSError:
                break
            if not data:
                break
            window = (window + data)[-16384:]
            fault, end = self._fault_for(window)
            if fault is not None:
                window = window[end:]
            if fault == "reset":
                connection.close(reset=True)
                return
            if fault is not None:
                connection.mode = fault
            try:
                connection.upstream.sendall(data)
            except OSError:
                break
        connection.close()

    def _answers(self, connection: _Connection) -> None:
        while not connection.closed.is_set():
            try:
                data = connection.upstream.recv(65536)
            except OSError:
                break
            if not data:
                break
            if connection.mode == "stall":
                continue  # swallowed: the client waits until its read timeout
            try:
                if connection.mode == "truncate":
                    # An interim "100 Continue" goes through whole: cut there, botocore 1.4x loops
                    # forever reading it (awsrequest._consume_headers), which no server we talk to does.
                    interim = len(_INTERIM) if data.startswith(_INTERIM) else 0
                    connection.client.sendall(data[:interim + _TRUNCATE_AFTER])
                    if len(data) > interim:
                        break
                    continue
                connection.client.sendall(data)
            except OSError:
                break
        connection.close()
