"""benchmarks/probability_memory.py on tiny arguments: three subprocess measurements and the table."""

from __future__ import annotations

import pytest

from benchmarks import probability_memory


@pytest.mark.slow
def test_probability_memory_runs_on_tiny_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert probability_memory.main(["--shape", "4", "64", "64", "--no-record"]) == 0
    out = capsys.readouterr().out
    for mode in probability_memory.MODES:
        assert f"| {mode} |" in out
    assert "| reference |" in out and " 1.00 |" in out  # the reference row is its own ratio
