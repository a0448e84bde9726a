"""Training curves: whether the loss flattened, and the titled plot with validation."""

from __future__ import annotations

from pathlib import Path

from smp_diffusion_encoder.training.curves import loss_flattened, plot_training_curves


def test_flattening_compares_the_last_tenth_with_the_tenth_before() -> None:
    falling = [{"step": s, "loss": 2.0 - s / 100} for s in range(1, 101)]
    assert loss_flattened(falling).flat is False and "still falling" in loss_flattened(falling).text
    flat = [{"step": s, "loss": 1.0 + 0.01 * ((-1) ** s)} for s in range(1, 101)]
    result = loss_flattened(flat)
    assert result.flat is True and abs(result.last - 1.0) < 0.01 and "had flattened" in result.text
    assert loss_flattened([{"step": 1, "loss": 1.0}]).flat is None
    rows_with_gaps = [{"step": s, "loss": 1.0} if s % 2 else {"step": s, "val_dice": 0.5} for s in range(1, 60)]
    assert loss_flattened(rows_with_gaps).flat is True  # validation-only rows are skipped


def test_plot_has_loss_and_validation(tmp_path: Path) -> None:
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 41)] + [{"step": s, "val_dice": s / 50} for s in (10, 20)]
    plot_training_curves(tmp_path / "c.png", rows, title="probe, 4 slices")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "c.png").stat().st_size > 5000
