"""Every Python block of README.md runs as written, in a fresh interpreter, offline (so the README cannot drift).

A block may be preceded by an HTML comment that says how it runs:

* nothing: run as is with ``HF_HUB_OFFLINE=1`` and an empty Hugging Face home (what a new user has);
* ``<!-- readme-test: hub -->``: run against a loopback Hub (:class:`tests.hub.fake_hub.FakeHub`) that holds the
  shipped ``ddpm-ct`` weights as ``ORG/REPO``; the block's ``"<40-hex ...>"`` placeholder becomes that commit;
* ``<!-- readme-test: skip REASON -->``: not run; the reason must be given.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub.fake_hub import FakeHub
from tests.hub.hub_helpers import folder_files

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!--\s*readme-test:\s*(?P<mode>[^>]*?)\s*-->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def readme_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(m["mode"] or "run", m["code"]) for m in BLOCK.finditer(text)]


BLOCKS = readme_blocks()


def test_the_readme_has_python_blocks_and_every_skip_says_why() -> None:
    assert len(BLOCKS) >= 3
    for mode, _ in BLOCKS:
        assert mode in ("run", "hub") or re.fullmatch(r"skip \S.{8,}", mode), f"bad readme-test marker {mode!r}"


def _run(code: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "MPLBACKEND": "Agg",
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**base, **env}, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(index: int, tmp_path: Path) -> None:
    mode, code = BLOCKS[index]
    if mode.startswith("skip"):
        pytest.skip(f"README block {index}: {mode}")
    env: dict[str, str] = {}
    hub = None
    if mode == "hub":
        hub = FakeHub()
        sha = hub.commit("ORG/REPO", folder_files(ROOT / "smp_diffusion_encoder" / "weights" / "ddpm-ct"))
        code = re.sub(r'"<40-hex[^"]*>"', f'"{sha}"', code)
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "NO_PROXY": "127.0.0.1,localhost"}
    try:
        done = _run(code, tmp_path, env)
    finally:
        if hub is not None:
            hub.close()
    assert done.returncode == 0, f"README block {index} failed:\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"
