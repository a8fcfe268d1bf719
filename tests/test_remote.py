"""The black box as a provider API (``avid serve``) and its remote client, on 127.0.0.1 only:
same numbers as in-process, training that survives a server killed and restarted, 8 concurrent
clients, and a clear 4xx for every kind of bad request. Every loop here is bounded."""

import asyncio
import threading

import lightning.pytorch as pl
import pytest
import requests
import torch
from safetensors.torch import load_file, save

from avid.blackbox import open_denoiser
from avid.blackbox.denoiser import DenoiserSpec
from avid.blackbox.provider import open_provider
from avid.blackbox.remote import open_remote
from avid.config import SampleConfig, load_run_config
from avid.data import Batch
from avid.diffusion import Diffusion, DiffusionConfig
from avid.methods import Context, build_method
from avid.rollout import sample_videos
from avid.pipelines.serve import Batcher, make_app
from avid.train import load_method, train
from tests.conftest import K, SIZE, TINY_UNET, make_base, make_store
from tests.servers import ServerProcess, app_in_thread, metrics, server_process

torch.set_num_threads(1)
STEPS = 6


def inputs(b=2, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, t, SIZE, SIZE, generator=g), torch.randint(0, 20, (b,), generator=g),
            torch.rand(b, 3, K, SIZE, SIZE, generator=g) * 2 - 1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    return root, make_base(root / "base"), make_store(root / "data").root


@pytest.fixture(scope="module")
def server(setup):
    with server_process(setup[1], "--precision", "fp32") as s:  # fp32, as the runs below open a local base
        yield s


def run_config(out, base, data):
    return load_run_config(None, [
        f"out={out}", f"base={base}", f"data.train={data}", "data.frames=6", "method.name=avid",
        f"method.options={{unet: {TINY_UNET}}}", f"train.max_steps={STEPS}", "train.batch_size=4",
        "train.ckpt_every=2", "train.log_every=1", "train.progress=false", "train.precision=32-true"])


@pytest.fixture(scope="module")
def runs(setup, server):
    """The same AVID run trained in-process (worker backend) and against the server."""
    root, base, data = setup
    return train(run_config(root / "local", base, data)), train(run_config(root / "remote", server.url, data))


def test_the_remote_black_box_answers_as_the_model_in_process(setup, server):
    remote, local = open_denoiser(server.url), open_provider(setup[1], precision="fp32")
    assert remote.spec == local.spec and not remote.spec.latent
    x_i, i, first = inputs(b=3)
    assert torch.allclose(remote(x_i, i, first), local.denoise(x_i, i, first), atol=1e-6)
    s = remote.stats
    assert (s.calls, s.frames) == (1, 12) and s.bytes_sent > x_i.nbytes + first.nbytes and s.bytes_received > x_i.nbytes
    assert s.wait_s > 0
    clients = metrics(server)["clients"]
    assert any(c["queries"] >= 1 and c["bytes_in"] >= s.bytes_sent for c in clients.values())


def test_training_against_the_server_gives_the_numbers_of_training_in_process(runs):
    local, remote = runs
    a, b = load_file(local / "model.safetensors"), load_file(remote / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    import json

    ql, qr = (json.loads((run / "blackbox.json").read_text()) for run in runs)
    queries = STEPS + STEPS // 2  # one per step, and one per checkpoint (every 2 steps): its weights' loss is checked
    assert ql["calls"] == qr["calls"] == queries and ql["frames"] == qr["frames"] == queries * 4 * 4
    assert qr["bytes_sent"] > ql["bytes_sent"] > 0 and qr["wait_s"] > 0  # bodies carry a header too
    assert qr["base"].startswith("http://") and qr["fingerprint"] == ql["fingerprint"]
    # sampling a run trained against the server re-opens the server: same videos as in-process
    first, actions = inputs(b=2)[2], torch.randint(0, 5, (2, 4))
    cfg = SampleConfig(steps=3, batch_size=2, precision="fp32")
    videos = [sample_videos(load_method(run, "fp32")[0], first, actions, cfg, progress=False).videos for run in runs]
    assert torch.allclose(videos[0], videos[1], atol=1e-4)


def test_training_survives_the_server_killed_and_restarted_mid_run(setup, runs, monkeypatch):
    root, base, data = setup
    server = ServerProcess(base, 0, "--threads", "1", "--precision", "fp32")
    events = []

    class KillServer(pl.Callback):  # at step 2, kill the server while the step queries it, then restart it
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2 and not events:
                def kill_and_restart():
                    server.kill()
                    events.append(("killed", trainer.global_step))
                    server.start()
                    events.append(("restarted", server.port))
                threading.Thread(target=kill_and_restart, daemon=True).start()

    from avid.train import harness as run_mod

    orig = run_mod.L.Trainer
    monkeypatch.setattr(run_mod.L, "Trainer", lambda *a, **kw: orig(*a, **{**kw, "callbacks": [*kw["callbacks"], KillServer()]}))
    try:
        out = train(run_config(root / "killed", server.url, data))
        assert [e[0] for e in events] == ["killed", "restarted"]
        assert metrics(server)["clients"]  # the restarted server answered the rest of the run
    finally:
        server.kill()
    a, b = load_file(runs[1] / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # nothing lost, nothing repeated: the uninterrupted run's weights
    assert load_run_config(out / "run.yaml").train.max_steps == STEPS


def test_eight_concurrent_training_clients_all_finish(setup, server):
    before = metrics(server)
    results, errors = {}, []

    def client(n):
        try:
            torch.manual_seed(n)
            base = open_remote(server.url, client=f"trainer-{n}")
            ctx = Context(diffusion=Diffusion(base.spec.diffusion), cond_frames=K, num_actions=5, base=base)
            avid = build_method("avid", ctx, {"unet": TINY_UNET})
            opt = torch.optim.AdamW(avid.parameters(), lr=1e-3)
            for step in range(3):
                x_i, _, first = inputs(b=2, seed=10 * n + step)
                loss, _ = avid.loss(Batch(first, x_i.clamp(-1, 1), torch.randint(0, 5, (2, 4))))
                loss.backward()
                opt.step()
                opt.zero_grad()
            results[n] = base.stats.calls
        except Exception as e:  # reported below, with the client's number
            errors.append((n, repr(e)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == [] and results == {n: 3 for n in range(8)}
    after = metrics(server)
    assert all(after["clients"][f"trainer-{n}"]["queries"] == 3 for n in range(8))
    assert after["batched_queries"] - before["batched_queries"] == 24  # every query answered once, some merged
    assert after["batches"] - before["batches"] <= 24


def test_bad_requests_get_a_clear_4xx_and_the_server_stays_up(setup):
    with server_process(setup[1], "--token", "s3cret", "--max-request-mb", "1", "--max-batch", "4") as server:
        url, auth = server.url, {"Authorization": "Bearer s3cret"}
        x_i, i, first = inputs(b=2)

        def post(body, headers=auth, path="/denoise"):
            return requests.post(url + path, data=body, headers=headers, timeout=30)

        good = save({"x_i": x_i, "i": i, "first": first})
        cases = {
            "no token": (post(good, headers={}), 401, "token"),
            "wrong token": (post(good, headers={"Authorization": "Bearer nope"}), 401, "token"),
            "not safetensors": (post(b"\x00garbage" * 10), 400, "not safetensors"),
            "missing tensor": (post(save({"x_i": x_i, "i": i})), 400, "lacks"),
            "wrong dtype": (post(save({"x_i": x_i.double(), "i": i, "first": first})), 422, "dtype"),
            "wrong shape": (post(save({"x_i": x_i[:, :, :, :8].contiguous(), "i": i, "first": first})), 422, "shape"),
            "step out of range": (post(save({"x_i": x_i, "i": torch.tensor([0, 99]), "first": first})), 422, "steps"),
            "too many videos": (post(save({"x_i": x_i.repeat(3, 1, 1, 1, 1), "i": i.repeat(3),
                                           "first": first.repeat(3, 1, 1, 1, 1)})), 413, "1 to 4 videos"),
            "oversized": (post(b"\x00" * (2 << 20)), 413, "exceeds the limit"),
            "codec of a pixel model": (post(save({"video": x_i}), path="/encode"), 404, "pixel-space"),
        }
        for name, (resp, status, words) in cases.items():
            assert resp.status_code == status and words in resp.json()["detail"], (name, resp.status_code, resp.text)
        assert requests.get(url + "/health", timeout=10).json()["status"] == "ok"  # still up, no token needed
        assert post(good).status_code == 200
        with pytest.raises(ValueError, match="401"):  # the client says why, in one line
            open_remote(url, token="nope")
        remote = open_remote(url, token="s3cret")
        with pytest.raises(ValueError, match="first frames"):  # checked before it leaves the client
            remote(x_i, i, first[:, :, :1])
        assert metrics(server, "s3cret")["clients"]["127.0.0.1"]["refused"] >= len(cases)


def test_a_server_restarted_with_other_weights_stops_the_client(setup, tmp_path):
    server = ServerProcess(setup[1], 0, "--threads", "1", "--precision", "fp32")
    try:
        remote = open_remote(server.url)
        remote(*inputs())
        server.base = str(make_base(tmp_path / "other", seed=1))
        server.restart()
        with pytest.raises(RuntimeError, match="now serves another model"):
            remote(*inputs())
        with pytest.raises(ValueError, match="expected"):
            open_denoiser(server.url, fingerprint=remote.spec.fingerprint)
    finally:
        server.kill()


class FlakyProvider:
    """Fails its first ``failures`` queries with a server error, then answers ``2 * x_i``."""

    def __init__(self, failures: int) -> None:
        self.spec = DenoiserSpec(DiffusionConfig(num_steps=20), 3, K, SIZE, 8, "flaky")
        self.failures, self.calls = failures, 0

    def denoise(self, x_i, i, first):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("out of memory (simulated)")
        return 2 * x_i


def test_server_errors_are_retried_with_backoff_then_reported():
    provider = FlakyProvider(failures=2)
    with app_in_thread(make_app(provider)) as url:
        x_i, i, first = inputs()
        assert torch.equal(open_remote(url, retries=3, backoff=0.01)(x_i, i, first), 2 * x_i)
        assert provider.calls == 3
        provider.failures = 10**6
        with pytest.raises(RuntimeError, match=r"failed after 2 retries \(500: .*out of memory"):
            open_remote(url, retries=2, backoff=0.01)(x_i, i, first)


def test_the_server_batches_queries_that_wait_and_answers_each_its_own():
    provider = FlakyProvider(failures=0)
    seen = []
    provider.denoise = lambda x_i, i, first: seen.append(len(x_i)) or 2 * x_i
    batcher = Batcher(provider, max_batch=5)
    queries = [inputs(b=b, t=t, seed=n) for n, (b, t) in enumerate([(2, 4), (2, 4), (1, 6), (2, 4), (1, 4)])]

    async def main():
        waiting = [asyncio.ensure_future(batcher.denoise(*q)) for q in queries]
        await asyncio.sleep(0)  # all five wait before the model runs
        task = asyncio.ensure_future(batcher.run())
        outs = await asyncio.gather(*waiting)
        task.cancel()
        return outs

    outs = asyncio.run(main())
    assert all(torch.equal(o, 2 * q[0]) for o, q in zip(outs, queries))
    assert seen == [5, 1, 2]  # 2+2+1 of one shape (max 5), then the other shape, then the rest
    assert (batcher.batches, batcher.batched_queries) == (3, 5)


def test_the_wire_format_is_safetensors_both_ways():
    from safetensors.torch import load

    from avid.blackbox.wire import MalformedBody, pack, unpack

    x_i, i, first = inputs()
    body = pack(x_i=x_i, i=i, first=first)
    read = load(body)  # any safetensors reader reads what we send ...
    assert torch.equal(read["x_i"], x_i) and torch.equal(read["i"], i) and torch.equal(read["first"], first)
    got = unpack(save({"x_i": x_i, "i": i, "first": first}), ("x_i", "i", "first"))  # ... and we read theirs
    assert all(torch.equal(a, b) for a, b in zip(got, (x_i, i, first)))
    for garbage in (b"", b"\x00" * 7, b"\xff" * 20, body[:-4], b"\x08" + b"\x00" * 7 + b"[1, 2]  "):
        with pytest.raises(MalformedBody, match="not safetensors"):
            unpack(garbage, ("x_i",))
