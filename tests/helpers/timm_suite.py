"""Fetch timm's own model tests and run them against our models (:mod:`timm_shim`).

The test file comes from the sdist of the installed timm version (the one the ``dev`` extra
pins), downloaded from the package registry with pip once and cached under
``~/.cache/mobilenets/timm-tests/<version>/``; it is never vendored into this repository.

    python tests/helpers/timm_suite.py                      # every shared name
    python tests/helpers/timm_suite.py -k forward_features  # extra pytest arguments
    MOBILENETS_TIMM_NAMES='mobilenetv3_small*' python tests/helpers/timm_suite.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cache_dir(version: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "mobilenets" / "timm-tests" / version


def fetch_tests(version: str) -> Path:
    """The folder holding timm ``version``'s ``tests/test_models.py`` (downloaded on first use;
    ``RuntimeError`` naming the pip command when the registry cannot be reached)."""
    dest = cache_dir(version)
    if (dest / "test_models.py").is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"timm=={version}", "--no-deps", "--no-binary", ":all:",
               "-d", tmp, "-q"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("timm-*.tar.gz"))
        if res.returncode or not sdists:
            raise RuntimeError(f"could not download timm {version}'s sdist ({' '.join(cmd)}): "
                               f"{(res.stderr or res.stdout).strip()[-300:]}")
        with tarfile.open(sdists[0]) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/tests/test_models.py"))
            data = tar.extractfile(member).read()
    dest.mkdir(parents=True, exist_ok=True)
    tmp_file = dest / "test_models.py.part"
    tmp_file.write_bytes(data)
    os.replace(tmp_file, dest / "test_models.py")
    return dest


def command(tests: Path, extra: list[str]) -> list[str]:
    """The pytest command running timm's test file with the shim (no repository conftest, no
    cache writes next to the cached file)."""
    return [sys.executable, "-m", "pytest", str(tests / "test_models.py"), "-p", "timm_shim", "-p", "no:cacheprovider",
            "--rootdir", str(tests), "-c", os.devnull, "-q", "-rfE", *extra]


def run(extra: list[str] = (), names: str | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run the suite in a subprocess; ``names``: ``MOBILENETS_TIMM_NAMES`` (patterns)."""
    import timm

    tests = fetch_tests(timm.__version__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    if names is not None:
        env["MOBILENETS_TIMM_NAMES"] = names
    return subprocess.run(command(tests, list(extra)), env=env, capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__":
    import timm

    tests = fetch_tests(timm.__version__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    sys.exit(subprocess.call(command(tests, sys.argv[1:]), env=env))
