"""Black-box servers for tests, on 127.0.0.1 only: ``avid serve`` as a separate process (killable),
or an app served from a thread of the test process (for fake providers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import requests

SRC = Path(__file__).resolve().parents[1] / "src"


class ServerProcess:
    """``avid serve --base BASE`` in a child process; ``port=0`` picks a free port once, and
    ``restart()`` reuses it."""

    def __init__(self, base, port: int = 0, *extra: str) -> None:
        self.base, self.port, self.extra, self.proc = str(base), port, extra, None
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "avid.cli", "serve", "--base", self.base, "--port", str(self.port),
             "--threads", "1", *self.extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        line = self.proc.stdout.readline()  # "serving model ... on http://127.0.0.1:PORT", or an error and EOF
        if " on http://" not in line:
            self.proc.kill()
            raise RuntimeError(f"avid serve did not start: {line}{self.proc.stdout.read()}")
        self.url = line.rsplit(" on ", 1)[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep its pipe drained

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def restart(self) -> None:
        self.kill()
        self.start()

    def metrics(self, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + "/metrics", headers=headers, timeout=10).json()


@contextmanager
def server_process(base, *extra: str):
    server = ServerProcess(base, 0, *extra)
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
