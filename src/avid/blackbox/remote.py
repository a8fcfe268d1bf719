"""Backend: a model provider's server over HTTP (``avid serve``, or any server speaking
``avid.blackbox.wire``), chosen by ``base: http://host:port`` in a config or ``--base``.

Every query is retried with exponential backoff on connection errors, broken answers and 5xx
(urllib3's ``Retry``: queries are pure functions of their inputs, so a retry is safe), so a run
waits through a server restart and continues at the same step. A 4xx is the caller's mistake and
raises a ``ValueError`` with the server's one-line reason. Every answer must carry the fingerprint
of the model the client opened: a server restarted with other weights stops the run.
"""

from __future__ import annotations

import os
import socket

import requests
import torch
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from avid.blackbox.denoiser import Denoiser, DenoiserSpec
from avid.blackbox.wire import CLIENT_HEADER, FINGERPRINT_HEADER, TENSORS, pack, unpack

TOKEN_ENV = "AVID_BLACKBOX_TOKEN"


def is_url(base: str | os.PathLike | None) -> bool:
    return isinstance(base, str) and base.startswith(("http://", "https://"))


class RemoteBackend:
    """Client side of a provider's server (``avid.blackbox.denoiser.Backend``).

    ``timeout``: (connect, read) seconds of one attempt; ``retries``: attempts after the first,
    with sleeps ``backoff * 2**n`` capped at ``backoff_max`` (defaults: about 4 minutes in all)."""

    def __init__(self, url: str, token: str | None = None, timeout: tuple[float, float] = (5.0, 300.0),
                 retries: int = 36, backoff: float = 0.25, backoff_max: float = 8.0, client: str | None = None,
                 fingerprint: str | None = None) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout
        retry = Retry(total=retries, connect=retries, read=retries, status=retries, other=retries,
                      backoff_factor=backoff, backoff_max=backoff_max, status_forcelist=(500, 502, 503, 504),
                      allowed_methods=None, raise_on_status=False)
        self._session = requests.Session()
        self._session.mount("http://", HTTPAdapter(max_retries=retry))
        self._session.mount("https://", HTTPAdapter(max_retries=retry))
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._session.headers[CLIENT_HEADER] = client or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        resp = self._request("GET", "/spec")
        self.spec = DenoiserSpec.from_dict(resp.json())
        if fingerprint is not None and self.spec.fingerprint != fingerprint:
            raise ValueError(f"the black box at {self.url} serves model {self.spec.fingerprint[:12]}, "
                             f"expected {fingerprint[:12]}")
        self._check_fingerprint(resp)

    def _request(self, method: str, path: str, body: bytes | None = None) -> requests.Response:
        headers = {"Content-Type": TENSORS} if body is not None else None
        try:
            resp = self._session.request(method, self.url + path, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as e:
            raise RuntimeError(f"black-box server {self.url} unreachable after retries: {e}") from None
        if 400 <= resp.status_code < 500:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ValueError(f"black-box server {self.url}{path} refused the query ({resp.status_code}): {detail}")
        if resp.status_code >= 500:
            raise RuntimeError(f"black-box server {self.url}{path} failed after retries ({resp.status_code}): "
                               f"{resp.text[:200]}")
        return resp

    def _check_fingerprint(self, resp: requests.Response) -> None:
        got = resp.headers.get(FINGERPRINT_HEADER)
        if got != self.spec.fingerprint:
            raise RuntimeError(f"black-box server {self.url} now serves another model ({(got or 'none')[:12]}, "
                               f"opened {self.spec.fingerprint[:12]}): restart it with the same weights")

    def _post(self, path: str, name: str, **tensors: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        body = pack(**tensors)
        resp = self._request("POST", path, body)
        self._check_fingerprint(resp)
        (out,) = unpack(resp.content, (name,))
        return out, len(body), len(resp.content)

    def denoise(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        return self._post("/denoise", "out", x_i=x_i, i=i, first=first)

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        return self._post("/encode", "latent", video=video)

    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        return self._post("/decode", "video", latent=latent)

    def close(self) -> None:
        self._session.close()


def open_remote(url: str, token: str | None = None, **options) -> Denoiser:
    """The model served at ``url`` behind the black-box door. ``token``: the server's bearer token
    (default: ``$AVID_BLACKBOX_TOKEN``); ``options``: ``RemoteBackend``'s timeouts and retries."""
    return Denoiser(RemoteBackend(url, token=token, **options))
