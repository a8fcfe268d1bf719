"""``avid serve``: a base model served as a provider would, over HTTP (FastAPI + uvicorn).

The server publishes the model's spec and answers ``denoise`` (and, for latent models,
``encode`` / ``decode``) with binary safetensors bodies (``avid.blackbox.wire``). Before any
compute it checks the bearer token (when one is set), the body's size, that it is safetensors, and
every tensor's dtype and shape against the spec. Denoising queries that arrive while the model is
busy are batched: each round takes every waiting query of the same shape, up to ``max_batch``
videos, as one forward pass. ``/health`` answers without a token; ``/metrics`` reports queries,
frames, bytes and latency per client (the ``X-Avid-Client`` header, else the client's address).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

import torch
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from avid.blackbox.denoiser import check_denoise_inputs
from avid.blackbox.provider import Provider, open_provider
from avid.blackbox.wire import CLIENT_HEADER, FINGERPRINT_HEADER, TENSORS, MalformedBody, pack, unpack
from avid.checkpoint import REPO_ROOT

log = logging.getLogger("avid")


@dataclass
class ServeLimits:
    max_request_mb: float = 64.0  # larger bodies get 413 before they are read
    max_batch: int = 64  # videos per query, and per batched forward pass


@dataclass
class ClientStats:
    queries: int = 0
    frames: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    latency_s: float = 0.0  # summed; mean = latency_s / queries
    max_latency_s: float = 0.0
    refused: int = 0  # 4xx answers


class Batcher:
    """Runs denoising queries on the model one batch at a time, merging those that wait."""

    def __init__(self, provider: Provider, max_batch: int) -> None:
        self.provider, self.max_batch = provider, max_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="avid-model")
        self.batches = self.batched_queries = 0

    async def denoise(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        done = asyncio.get_running_loop().create_future()
        await self.queue.put((x_i, i, first, done))
        return await done

    def _take(self, head: tuple) -> list[tuple]:
        """``head`` and every waiting query of its shape, up to ``max_batch`` videos; the others wait
        for the next round, in their order."""
        items, rest, size = [head], [], len(head[0])
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item[0].shape[1:] == head[0].shape[1:] and size + len(item[0]) <= self.max_batch:
                items.append(item)
                size += len(item[0])
            else:
                rest.append(item)
        for item in rest:
            self.queue.put_nowait(item)
        return items

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = self._take(await self.queue.get())
            x_i, i, first = items[0][:3] if len(items) == 1 else (torch.cat([it[k] for it in items]) for k in range(3))
            try:
                out = await loop.run_in_executor(self.executor, self.provider.denoise, x_i, i, first)
            except Exception as e:  # every query of the batch gets the error
                for it in items:
                    if not it[3].done():  # (a query whose client went away is cancelled)
                        it[3].set_exception(e)
                continue
            self.batches += 1
            self.batched_queries += len(items)
            for it, part in zip(items, out.split([len(it[0]) for it in items])):
                if not it[3].done():
                    it[3].set_result(part)


def make_app(provider: Provider, token: str | None = None, limits: ServeLimits | None = None) -> FastAPI:
    limits = limits or ServeLimits()
    spec = provider.spec
    stats: dict[str, ClientStats] = defaultdict(ClientStats)
    started = time.time()
    batcher = Batcher(provider, limits.max_batch)
    bearer = HTTPBearer(auto_error=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="avid black-box provider", lifespan=lifespan)

    def client_of(request: Request) -> str:
        return request.headers.get(CLIENT_HEADER) or (request.client.host if request.client else "unknown")

    def authorised(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        client = client_of(request)
        if token is not None and (cred is None or not secrets.compare_digest(cred.credentials.encode(), token.encode())):
            stats[client].refused += 1
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        return client

    def refuse(client: str, status: int, detail: str):
        stats[client].refused += 1
        raise HTTPException(status, detail)

    async def read_body(request: Request, client: str) -> bytes:
        cap = int(limits.max_request_mb * 2**20)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            refuse(client, 413, f"request body of {declared} bytes exceeds the limit of {cap} bytes")
        if declared is not None:  # read at most what was declared, in one piece
            return await request.body()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                refuse(client, 413, f"request body exceeds the limit of {cap} bytes")
        return bytes(body)

    def parse(body: bytes, names: tuple[str, ...], client: str) -> list[torch.Tensor]:
        try:
            return unpack(body, names)
        except MalformedBody as e:
            refuse(client, 400, str(e))
        except ValueError as e:
            refuse(client, 422, str(e))

    def answer(client: str, body: bytes, t0: float, frames: int, **out: torch.Tensor) -> Response:
        data = pack(**out)
        s, dt = stats[client], time.perf_counter() - t0
        s.queries, s.frames, s.bytes_in, s.bytes_out = s.queries + 1, s.frames + frames, s.bytes_in + len(body), s.bytes_out + len(data)
        s.latency_s, s.max_latency_s = s.latency_s + dt, max(s.max_latency_s, dt)
        return Response(data, media_type=TENSORS, headers={FINGERPRINT_HEADER: spec.fingerprint})

    @app.get("/health")
    def health():
        return {"status": "ok", "fingerprint": spec.fingerprint, "uptime_s": time.time() - started,
                "queries": sum(s.queries for s in stats.values())}

    @app.get("/spec")
    def get_spec(response: Response, client: str = Depends(authorised)):
        response.headers[FINGERPRINT_HEADER] = spec.fingerprint
        return spec.to_dict()

    @app.get("/metrics")
    def metrics(client: str = Depends(authorised)):
        return {"fingerprint": spec.fingerprint, "uptime_s": time.time() - started, "batches": batcher.batches,
                "batched_queries": batcher.batched_queries, "clients": {k: asdict(v) for k, v in stats.items()}}

    @app.post("/denoise")
    async def denoise(request: Request, client: str = Depends(authorised)):
        t0 = time.perf_counter()
        body = await read_body(request, client)
        x_i, i, first = parse(body, ("x_i", "i", "first"), client)
        try:
            check_denoise_inputs(spec, x_i, i, first)
        except ValueError as e:
            refuse(client, 422, str(e))
        if not 1 <= len(x_i) <= limits.max_batch:
            refuse(client, 413, f"a query holds 1 to {limits.max_batch} videos, got {len(x_i)}")
        try:
            out = await batcher.denoise(x_i, i, first)
        except ValueError as e:  # the model refused what the spec let through
            refuse(client, 422, str(e))
        except Exception as e:  # the model failed: 500, which clients retry
            log.error("denoise failed for %s: %s: %s", client, type(e).__name__, e)
            raise HTTPException(500, f"the model failed ({type(e).__name__}: {e})") from None
        return answer(client, body, t0, x_i.shape[0] * x_i.shape[2], out=out)

    async def codec(request: Request, client: str, kind: str, name: str, out_name: str) -> Response:
        t0 = time.perf_counter()
        if not spec.latent:
            refuse(client, 404, "this is a pixel-space model: it has no codec (encode/decode)")
        body = await read_body(request, client)
        (x,) = parse(body, (name,), client)
        if x.ndim != 5 or not 1 <= len(x) <= limits.max_batch:
            refuse(client, 422, f"expected {name} (B, C, T, H, W) with 1 <= B <= {limits.max_batch}, got {tuple(x.shape)}")
        try:
            out = await asyncio.get_running_loop().run_in_executor(batcher.executor, getattr(provider, kind), x)
        except ValueError as e:
            refuse(client, 422, str(e))
        return answer(client, body, t0, x.shape[0] * x.shape[2], **{out_name: out.float()})

    @app.post("/encode")
    async def encode(request: Request, client: str = Depends(authorised)):
        return await codec(request, client, "encode", "video", "latent")

    @app.post("/decode")
    async def decode(request: Request, client: str = Depends(authorised)):
        return await codec(request, client, "decode", "latent", "video")

    return app


def serve(base: str, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, precision: str = "auto",
          device: str = "cpu", limits: ServeLimits | None = None, threads: int | None = None) -> None:
    """Serve the model at ``base`` until interrupted. Prints ``serving ... on http://HOST:PORT`` once
    the socket listens (``port=0``: a free port, shown there)."""
    import uvicorn

    if threads:
        torch.set_num_threads(threads)
    provider = open_provider(base, precision=precision, device=device)
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without a token: anyone who reaches it can query the model", host)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections wait in the backlog from now on, until uvicorn accepts them
    server = uvicorn.Server(uvicorn.Config(make_app(provider, token, limits), log_level="warning"))
    print(f"serving model {provider.spec.fingerprint[:12]} ({precision}) on http://{host}:{sock.getsockname()[1]}",
          flush=True)
    server.run(sockets=[sock])


class ServerProcess:
    """``avid serve --base BASE`` in a child process on 127.0.0.1 (for tests and ``avid bench``):
    ``port=0`` picks a free port at the first start, and ``start()`` after ``kill()`` reuses it."""

    def __init__(self, base, port: int = 0, *extra: str) -> None:
        self.base, self.port, self.extra, self.proc = str(base), port, extra, None
        self.start()

    def start(self) -> None:
        src = str(REPO_ROOT / "src")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "avid.cli", "serve", "--base", self.base, "--port", str(self.port), *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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
