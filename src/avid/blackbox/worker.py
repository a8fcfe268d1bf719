"""Backend: the network in a worker process on this machine (the default for a local model).

The process that trains or samples a method never holds the base network: a worker process
(started from a ``forkserver``, so each one costs a fork, not a fresh interpreter) opens the
provider and answers queries. The weights' path is sent to it once over the pipe and kept nowhere
on this side. Tensors of denoising queries travel through one shared-memory block (grown when a
larger query comes): the client copies ``x_i`` and the first frames in, sends the shapes and steps
over the pipe, and copies the prediction out — about two memory copies per query. Codec queries
(rare) are pickled over the pipe.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
import weakref
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import torch

from avid.blackbox.denoiser import Denoiser, DenoiserSpec
from avid.precision import resolve_precision

START_TIMEOUT_S = 300.0
_ERRORS = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError}  # raised as such on this side


def _context():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["avid.blackbox.provider", "avid.blackbox.worker"])
    return ctx


def _start(proc) -> None:
    """Start ``proc`` without making the child re-import the caller's ``__main__`` (as
    multiprocessing otherwise does): the worker needs only this module, and a script without an
    ``if __name__ == "__main__"`` guard (or code read from stdin) must not run again in it."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__.pop(k) for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__spec__ = None
    try:
        proc.start()
    finally:
        del main.__spec__
        main.__dict__.update(saved)


def _layout(x_shape, first_shape) -> tuple[int, int]:
    """Float32 offsets in the shared block: ``[x_i | first | out]`` (``out`` has ``x_i``'s shape)."""
    n_x, n_f = torch.Size(x_shape).numel(), torch.Size(first_shape).numel()
    return n_x, n_x + n_f


class WorkerBackend:
    """Client side of the worker process (``avid.blackbox.denoiser.Backend``)."""

    def __init__(self, path: str | Path, precision: str = "auto", device: str = "cpu",
                 threads: int | None = None) -> None:
        resolve_precision(precision, device)  # an unknown name fails here, not in the worker
        ctx = _context()
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="avid-blackbox-worker")
        _start(self._proc)
        child.close()
        self._shm: list[SharedMemory | None] = [None]
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, self._conn, self._shm)
        self._conn.send(("open", str(path), precision, device, threads or torch.get_num_threads()))
        self.spec = DenoiserSpec.from_dict(self._recv(START_TIMEOUT_S)[1])

    def _recv(self, timeout: float | None = None):
        waited = 0.0
        while not self._conn.poll(0.5):
            waited += 0.5
            if not self._proc.is_alive():
                raise self._dead()
            if timeout is not None and waited >= timeout:
                raise RuntimeError(f"the black-box worker process did not answer within {timeout:.0f} s")
        try:
            reply = self._conn.recv()
        except (EOFError, OSError):
            raise self._dead() from None
        if reply[0] == "error":
            raise _ERRORS.get(reply[1], RuntimeError)(reply[2])
        return reply

    def _dead(self) -> RuntimeError:
        self._proc.join(timeout=5)
        return RuntimeError(f"the black-box worker process exited (exit code {self._proc.exitcode}); "
                            "open the model again")

    def _send(self, msg: tuple) -> None:
        try:
            self._conn.send(msg)
        except OSError:
            raise self._dead() from None

    def _buffer(self, nbytes: int) -> memoryview:
        shm = self._shm[0]
        if shm is None or shm.size < nbytes:
            new = SharedMemory(create=True, size=max(nbytes, 1))
            self._send(("buffer", new.name))
            self._recv()
            if shm is not None:
                shm.close()
                shm.unlink()
            self._shm[0] = shm = new
        return shm.buf

    def denoise(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("this black-box Denoiser was closed")
            if not self._proc.is_alive():
                raise self._dead()
            a, b = _layout(x_i.shape, first.shape)
            block = torch.frombuffer(self._buffer(4 * (b + a)), dtype=torch.float32, count=b + a)
            block[:a].view(x_i.shape).copy_(x_i)
            block[a:b].view(first.shape).copy_(first)
            self._send(("denoise", tuple(x_i.shape), tuple(first.shape), i.tolist()))
            self._recv()
            out = block[b:].view(x_i.shape).clone()
            del block  # no view of the shared block may outlive the call (it may be replaced)
        return out, x_i.nbytes + first.nbytes + i.nbytes, out.nbytes

    def _codec(self, kind: str, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        with self._lock:
            self._send((kind, x.float().numpy()))
            out = torch.from_numpy(self._recv()[1])
        return out, x.nbytes, out.nbytes

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        return self._codec("encode", video)

    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        return self._codec("decode", latent)

    def close(self) -> None:
        with self._lock:
            self._finalizer()

    @property
    def closed(self) -> bool:
        return not (self._finalizer.alive and self._proc.is_alive())


def _shutdown(proc, conn, shm_box) -> None:
    try:
        conn.send(("close",))
    except (OSError, ValueError):
        pass
    proc.join(timeout=10)
    if proc.is_alive():
        proc.kill()
        proc.join()
    conn.close()
    if shm_box[0] is not None:
        shm_box[0].close()
        shm_box[0].unlink()
        shm_box[0] = None


def open_worker(path: str | Path, precision: str = "auto", device: str = "cpu",
                threads: int | None = None) -> Denoiser:
    """The model at ``path`` behind the black-box door, run by a worker process. ``precision``:
    "bf16" or "fp32"; ``threads``: the worker's torch threads (default: this process's)."""
    return Denoiser(WorkerBackend(path, precision, device, threads))


# ---- the worker process ----------------------------------------------------------------------

def _answer(provider, shm: SharedMemory | None, msg: tuple):
    kind = msg[0]
    if kind == "denoise":
        _, x_shape, first_shape, steps = msg
        a, b = _layout(x_shape, first_shape)
        block = torch.frombuffer(shm.buf, dtype=torch.float32, count=b + a)
        out = provider.denoise(block[:a].view(x_shape), torch.tensor(steps, dtype=torch.long),
                               block[a:b].view(first_shape))
        block[b:].view(x_shape).copy_(out)
        return ("ok",)
    if kind in ("encode", "decode"):
        return ("ok", getattr(provider, kind)(torch.from_numpy(msg[1])).float().numpy())
    raise ValueError(f"unknown black-box query {kind!r}")


def _worker_main(conn) -> None:
    from avid.blackbox.provider import open_provider

    _, path, precision, device, threads = conn.recv()
    torch.set_num_threads(threads)
    try:
        provider = open_provider(path, precision=precision, device=device)
    except Exception as e:  # reported to the client, which raises it there
        conn.send(("error", type(e).__name__, str(e)))
        return
    del path
    conn.send(("ok", provider.spec.to_dict()))
    shm = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the client is gone
            break
        if msg[0] == "close":
            break
        try:
            if msg[0] == "buffer":
                if shm is not None:
                    shm.close()
                shm = SharedMemory(name=msg[1])  # the client owns (and unlinks) it; one resource tracker serves both
                reply = ("ok",)
            else:
                reply = _answer(provider, shm, msg)
        except Exception as e:
            reply = ("error", type(e).__name__, str(e))
        conn.send(reply)
    if shm is not None:
        shm.close()
