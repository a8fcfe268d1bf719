"""``avid play``: play a world model from a local web page. The page sends the keys held down as
an action, the server steps the world-model env and sends the frame back (PNG), as fast as the
model generates; the page shows frames per second, the step, the return and the model in use.

Keys (Procgen's 15 buttons): arrows move (diagonals by holding two), D A W S Q E the game's other
buttons, R restarts from new real first frames. Served on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from PIL import Image
from pydantic import BaseModel

from avid.envs import WorldModelEnv


class Step(BaseModel):
    action: int = 4  # Procgen's no-op


def png(frame: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def make_app(env: WorldModelEnv, model_name: str, seed: int = 0) -> FastAPI:
    """The page and its two calls (``POST /reset``, ``POST /step``) over one env, one step at a time."""
    app = FastAPI(title="avid play")
    lock = threading.Lock()
    state = {"episode": 0, "return": 0.0, "actions": []}
    n = int(env.action_space.n)

    def reply(obs, reward=0.0, terminated=False, truncated=False, info=None, seconds=0.0) -> dict:
        return {"frame": png(obs), "reward": reward, "terminated": terminated, "truncated": truncated,
                "step": (info or {}).get("step", 0), "return": state["return"], "episode": state["episode"],
                "seconds": seconds}

    def reset() -> dict:
        obs, info = env.reset(seed=seed + state["episode"])
        state["return"] = 0.0
        return reply(obs, info=info)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("__MODEL__", model_name)

    @app.get("/info")
    def about() -> dict:
        return {"model": model_name, "num_actions": n, "actions_received": list(state["actions"])}

    @app.post("/reset")
    def do_reset() -> dict:
        with lock:
            state["episode"] += 1
            return reset()

    @app.post("/step")
    def step(body: Step) -> dict:
        if not 0 <= body.action < n:
            raise HTTPException(422, f"action must lie in 0..{n - 1}, got {body.action}")
        with lock:
            t0 = time.perf_counter()
            obs, reward, terminated, truncated, info = env.step(body.action)
            state["return"] += reward
            state["actions"] = (state["actions"] + [body.action])[-1000:]
            out = reply(obs, reward, terminated, truncated, info, time.perf_counter() - t0)
            if terminated or truncated:  # the page shows the last frame, then the next episode starts
                state["episode"] += 1
                out["next"] = reset()
            return out

    with lock:
        reset()
    return app


def serve_play(env: WorldModelEnv, model_name: str, port: int = 8765, seed: int = 0) -> None:
    import uvicorn

    print(f"playing {model_name}: open http://127.0.0.1:{port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(make_app(env, model_name, seed), host="127.0.0.1", port=port, log_level="warning")


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>avid play: __MODEL__</title>
<style>
 body { font-family: sans-serif; background: #111; color: #eee; text-align: center; }
 #frame { width: 512px; height: 512px; image-rendering: pixelated; border: 1px solid #444; background: #000; }
 .stats span { display: inline-block; min-width: 7em; }
</style></head>
<body>
<h3>avid play &mdash; model: <span id="model">__MODEL__</span></h3>
<img id="frame" alt="frame">
<div class="stats"><span id="fps">0.0 frames/s</span><span id="step">step 0</span>
 <span id="ret">return 0</span><span id="episode">episode 0</span><span id="action">action 4</span></div>
<p>Arrows move (hold two for diagonals); D A W S Q E: the other buttons; R: restart. Click the page first.</p>
<script>
const held = new Set();
const buttons = {"d": 9, "a": 10, "w": 11, "s": 12, "q": 13, "e": 14};
addEventListener("keydown", e => { held.add(e.key.toLowerCase()); if (e.key.startsWith("Arrow")) e.preventDefault(); });
addEventListener("keyup", e => held.delete(e.key.toLowerCase()));
function action() {  // Procgen's button combinations: (LEFT|none|RIGHT) x (DOWN|none|UP), then D A W S Q E
  for (const [k, a] of Object.entries(buttons)) if (held.has(k)) return a;
  const h = held.has("arrowleft") ? 0 : held.has("arrowright") ? 2 : 1;
  const v = held.has("arrowdown") ? 0 : held.has("arrowup") ? 2 : 1;
  return h * 3 + v;
}
let frames = 0, since = performance.now();
function show(r) {
  document.getElementById("frame").src = "data:image/png;base64," + r.frame;
  document.getElementById("step").textContent = "step " + r.step;
  document.getElementById("ret").textContent = "return " + r["return"];
  document.getElementById("episode").textContent = "episode " + r.episode;
  frames += 1;
  const now = performance.now();
  if (now - since > 1000) {
    document.getElementById("fps").textContent = (1000 * frames / (now - since)).toFixed(1) + " frames/s";
    frames = 0; since = now;
  }
}
async function post(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                               body: JSON.stringify(body || {})});
  return r.json();
}
async function loop() {
  show(await post("/reset"));
  for (;;) {
    if (held.has("r")) { held.delete("r"); show(await post("/reset")); continue; }
    const a = action();
    document.getElementById("action").textContent = "action " + a;
    const r = await post("/step", {action: a});
    show(r);
    if (r.next) show(r.next);
  }
}
loop();
</script></body></html>
"""
