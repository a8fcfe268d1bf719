"""Backend: a model provider's server over HTTP (``avid serve``, or any server speaking
``avid.blackbox.wire``), chosen by ``base: http://host:port`` in a config or ``--base``.

Every query is retried with exponential backoff on connection errors, timeouts, answers cut off
mid-body and 5xx (queries are pure functions of their inputs, so a retry is safe), so a run waits
through a server restart and continues at the same step. (The loop is ours rather than urllib3's
``Retry``, which does not cover a body cut off after the headers arrived.) A 4xx is the caller's mistake and
raises a ``ValueError`` with the server's one-line reason. Every answer must carry the fingerprint
of the model the client opened: a server restarted with other weights stops the run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time

import requests
import torch
from urllib3.exceptions import HTTPError

from avid.blackbox.denoiser import Denoiser, DenoiserSpec
from avid.blackbox.wire import CLIENT_HEADER, FINGERPRINT_HEADER, TENSORS, pack, unpack

log = logging.getLogger("avid")
TOKEN_ENV = "AVID_BLACKBOX_TOKEN"
RETRY_STATUS = (500, 502, 503, 504)


def is_url(base: str | os.PathLike | None) -> bool:
    return isinstance(base, str) and base.startswith(("http://", "https://"))


class RemoteBackend:
    """Client side of a provider's server (``avid.blackbox.denoiser.Backend``).

    ``timeout``: (connect, read) seconds of one attempt; ``retries``: attempts after the first,
    with sleeps ``backoff * 2**n`` capped at ``backoff_max`` (defaults: about 4 minutes in all)."""

    def __init__(self, url: str, token: str | None = None, timeout: tuple[float, float] = (5.0, 300.0),
                 retries: int = 36, backoff: float = 0.25, backoff_max: float = 8.0, client: str | None = None,
                 fingerprint: str | None = None) -> None:
        self.url, self.timeout, self.closed = url.rstrip("/"), timeout, False
        self.retries, self.backoff, self.backoff_max = retries, backoff, backoff_max
        self._session = requests.Session()
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._session.headers[CLIENT_HEADER] = client or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        resp, data = self._request("GET", "/spec")
        self.spec = DenoiserSpec.from_dict(json.loads(data))
        if fingerprint is not None and self.spec.fingerprint != fingerprint:
            raise ValueError(f"the black box at {self.url} serves model {self.spec.fingerprint[:12]}, "
                             f"expected {fingerprint[:12]}")
        self._check_fingerprint(resp)

    def _attempt(self, method: str, path: str, body: bytes | None) -> tuple[requests.Response, bytes]:
        headers = {"Content-Type": TENSORS} if body is not None else None
        resp = self._session.request(method, self.url + path, data=body, headers=headers, timeout=self.timeout,
                                     stream=True)
        return resp, resp.raw.read(decode_content=True)  # the whole body in one read (a 3 MB answer in 10 kB chunks costs 12 ms)

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[requests.Response, bytes]:
        """The answer and its body, after retries; ``ValueError`` on 4xx, ``RuntimeError`` when the
        retries are spent."""
        if self.closed:
            raise RuntimeError("this black-box Denoiser was closed")
        for attempt in range(self.retries + 1):
            try:
                resp, data = self._attempt(method, path, body)
                if resp.status_code not in RETRY_STATUS:
                    break
                problem = f"{resp.status_code}: {data[:200].decode(errors='replace')}"
            except (requests.RequestException, HTTPError, OSError) as e:
                errno = re.search(r"\[Errno -?\d+\][^)\"']*", str(e))  # e.g. "[Errno 111] Connection refused"
                problem = f"{type(e).__name__}: {errno.group(0) if errno else str(e)[:160]}"
            if attempt == self.retries:
                raise RuntimeError(f"black-box server {self.url}{path} failed after {self.retries} retries ({problem})")
            pause = min(self.backoff_max, self.backoff * 2**attempt)
            log.warning("black-box server %s: %s; retry %d of %d in %.2g s", self.url, problem, attempt + 1,
                        self.retries, pause)
            time.sleep(pause)
        if 400 <= resp.status_code < 500:
            try:
                detail = json.loads(data).get("detail", data.decode(errors="replace"))
            except ValueError:
                detail = data.decode(errors="replace")
            raise ValueError(f"black-box server {self.url}{path} refused the query ({resp.status_code}): {detail}")
        return resp, data

    def _check_fingerprint(self, resp: requests.Response) -> None:
        got = resp.headers.get(FINGERPRINT_HEADER)
        if got != self.spec.fingerprint:
            raise RuntimeError(f"black-box server {self.url} now serves another model ({(got or 'none')[:12]}, "
                               f"opened {self.spec.fingerprint[:12]}): restart it with the same weights")

    def _post(self, path: str, name: str, **tensors: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        body = pack(**tensors)
        resp, data = self._request("POST", path, body)
        self._check_fingerprint(resp)
        (out,) = unpack(data, (name,))
        return out, len(body), len(data)

    def denoise(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        return self._post("/denoise", "out", x_i=x_i, i=i, first=first)

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        return self._post("/encode", "latent", video=video)

    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        return self._post("/decode", "video", latent=latent)

    def close(self) -> None:
        self._session.close()
        self.closed = True


def open_remote(url: str, token: str | None = None, **options) -> Denoiser:
    """The model served at ``url`` behind the black-box door. ``token``: the server's bearer token
    (default: ``$AVID_BLACKBOX_TOKEN``); ``options``: ``RemoteBackend``'s timeouts and retries."""
    return Denoiser(RemoteBackend(url, token=token, **options))
