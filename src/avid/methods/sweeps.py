"""Sampling-time strengths of the guided baselines and the paper's sweeps over them (section 9.5).

PoE's ``lambda_p``, action CFG's ``lambda_a`` and classifier guidance's ``w`` combine trained
models at sampling time only, so a sweep trains once and samples with each value::

    for lam in PAPER_SWEEPS["poe"]["lambda_p"]:
        set_sampling_options(method, lambda_p=lam)
        sample_videos(method, ...)

A method's ``options()`` report the current values, and ``build_method`` accepts them as
constructor options, so ``{**saved_options, "lambda_p": 0.2}`` rebuilds a checkpoint at another
strength too.
"""

from __future__ import annotations

from avid.methods.base import Method

PAPER_SWEEPS: dict[str, dict[str, tuple[float, ...]]] = {
    "poe": {"lambda_p": (0.2, 0.4, 0.6)},
    "action-cfg": {"lambda_a": (0.3, 1.0, 3.0, 10.0)},
    "classifier-guidance": {"w": (0.003, 0.01, 0.03, 0.1, 0.3)},
}


def set_sampling_options(method: Method, **values: float) -> Method:
    """Set sampling-time strengths of ``method`` in place (no retraining); returns the method."""
    allowed = getattr(method, "sampling_options", ())
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"method {method.name!r} has no sampling-time option {unknown}; it has {list(allowed)}")
    for key, value in values.items():
        setattr(method, key, float(value))
    return method
