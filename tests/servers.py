"""Black-box servers for tests, on 127.0.0.1 only: ``avid serve`` as a separate process (killable,
``avid.pipelines.serve.ServerProcess``), or an app served from a thread of the test process (fake providers)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import requests

from avid.pipelines.serve import ServerProcess


def metrics(server: ServerProcess, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(server.url + "/metrics", headers=headers, timeout=10).json()


@contextmanager
def server_process(base, *extra: str):
    """``avid serve`` of ``base`` (one thread), killed at the end."""
    server = ServerProcess(base, 0, "--threads", "1", *extra)
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def app_in_thread(app):
    """Serve a FastAPI ``app`` from a thread on a free 127.0.0.1 port; yields its URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
