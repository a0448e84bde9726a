"""benchmarks/suggest_time.py on tiny arguments: it builds the scans and a model, runs suggest, prints the table."""

from __future__ import annotations

import pytest

from benchmarks import suggest_time


def test_suggest_time_runs_on_tiny_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        suggest_time.main(
            [
                "--scans",
                "2",
                "--slices",
                "6",
                "--measures",
                "error",
                "--encoder",
                "ddpm-ct-tiny",
                "--encoder-weights",
                "none",
                "--no-record",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| `error` | 2 x 6 |" in out and "CPU time" in out
