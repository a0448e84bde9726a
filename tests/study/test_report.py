"""Study report: aggregation over cases then seeds, markdown tables, CSV round trip, plot and overlay PNGs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib import pyplot as plt
from matplotlib.colors import to_rgb

from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.errors import ConfigError, InputFileError
from smp_diffusion_encoder.evaluation import slice_organ_dice
from smp_diffusion_encoder.study import (
    ORGAN_COLORS,
    RESULT_COLUMNS,
    aggregate,
    format_report_markdown,
    plot_dsc_vs_budget,
    read_results_csv,
    render_overlays,
    write_report,
    write_results_csv,
)

LABELS = {"ddpm-unet": "ddpm-ct + Unet decoder (frozen)", "imagenet-unet": "ImageNet + Unet"}
BUDGETS = {"4": 4, "10%": 6, "1": 1}  # deliberately not in slice order


def _row(
    method: str, budget: str, seed: int, case: str, dsc: float, protocol: str = "held-out cases", **organs: float
) -> dict[str, Any]:
    """A result row whose organs all score ``dsc`` (DSC) and ``dsc - 0.1`` (NSD), except ``organs`` overrides."""
    organ_dsc = {o: organs.get(o, dsc) for o in FLARE_ORGANS}
    values = np.array(list(organ_dsc.values()))
    return {
        "method": method,
        "method_label": LABELS[method],
        "budget": budget,
        "n_train_slices": BUDGETS[budget],
        "seed": seed,
        "case": case,
        "protocol": protocol,
        "mean_DSC": float(np.nanmean(values)),
        "mean_NSD": float(np.nanmean(values)) - 0.1,
        "train_seconds": 1.5 * seed,
        **{f"{o}_DSC": v for o, v in organ_dsc.items()},
        **{f"{o}_NSD": v - 0.1 for o, v in organ_dsc.items()},
    }


def _study() -> list[dict[str, Any]]:
    """2 methods x 3 budgets x 2 seeds x 2 cases, DSC = 0.1 * slices + 0.05 * seed + case offset (+0.1 ddpm)."""
    rows = []
    for method, bonus in (("imagenet-unet", 0.0), ("ddpm-unet", 0.1)):
        for budget, n in BUDGETS.items():
            for seed in (0, 1):
                for case, offset in (("CASE_0001", -0.02), ("CASE_0002", 0.02)):
                    rows.append(_row(method, budget, seed, case, 0.1 * n / 2 + 0.05 * seed + offset + bonus))
    return rows


def test_aggregate_averages_cases_then_seeds() -> None:
    rows = [
        _row("ddpm-unet", "4", 0, "A", 0.5),
        _row("ddpm-unet", "4", 0, "B", 0.7),  # seed 0 -> 0.6
        _row("ddpm-unet", "4", 1, "A", 0.9),
        _row("ddpm-unet", "4", 1, "B", 0.9),  # seed 1 -> 0.9
        _row("ddpm-unet", "4", 1, "C", 0.9),  # more cases in seed 1 must not weigh it more
    ]
    (result,) = aggregate(rows)
    assert (result.method, result.method_label, result.budget) == ("ddpm-unet", LABELS["ddpm-unet"], "4")
    assert result.n_seeds == 2 and result.n_cases == 3
    assert result.n_train_slices == 4 and isinstance(result.n_train_slices, int)
    assert result.dsc_mean == pytest.approx(0.75)
    assert result.dsc_std == pytest.approx(0.15)  # population std of (0.6, 0.9)
    assert result.nsd_mean == pytest.approx(0.65) and result.nsd_std == pytest.approx(0.15)
    assert result.organ_dsc["Liver"] == pytest.approx(0.75)


def test_aggregate_skips_nan() -> None:
    rows = [
        _row("ddpm-unet", "4", 0, "A", 0.4, RAG=math.nan),
        _row("ddpm-unet", "4", 0, "B", 0.6),
        _row("ddpm-unet", "4", 1, "A", 0.8, RAG=math.nan, LAG=math.nan),
    ]
    rows[2]["mean_NSD"] = math.nan  # a seed whose only NSD is nan drops out of the NSD statistics
    (result,) = aggregate(rows)
    assert result.organ_dsc["RAG"] == pytest.approx(0.6)  # seed 0 -> 0.6 (case B only), seed 1 -> all nan
    assert result.organ_dsc["LAG"] == pytest.approx(0.5)  # seed 1's nan is skipped, not counted as 0
    assert result.dsc_mean == pytest.approx((0.5 + 0.8) / 2)
    assert result.nsd_mean == pytest.approx(0.4) and result.nsd_std == pytest.approx(0.0)


def test_aggregate_orders_methods_by_appearance_and_budgets_by_slices() -> None:
    results = aggregate(_study())
    assert [(r.method, r.budget) for r in results] == [
        ("imagenet-unet", "1"),
        ("imagenet-unet", "4"),
        ("imagenet-unet", "10%"),
        ("ddpm-unet", "1"),
        ("ddpm-unet", "4"),
        ("ddpm-unet", "10%"),
    ]
    # budget 4: seeds 0.2 and 0.25 (+0.1 for ddpm) -> mean 0.325, std 0.025
    assert results[4].dsc_mean == pytest.approx(0.325) and results[4].dsc_std == pytest.approx(0.025)


def test_aggregate_needs_metric_columns() -> None:
    row = _row("ddpm-unet", "4", 0, "A", 0.5)
    del row["LK_DSC"]
    with pytest.raises(ValueError, match="row 0 lacks column.*LK_DSC"):
        aggregate([row])


def test_markdown_tables() -> None:
    text = format_report_markdown(
        _study(), title="Few-shot FLARE", context="Ran on 2 CPU cores.", images=[("Overlay", "fig/o.png")]
    )
    assert text.startswith("# Few-shot FLARE\n\nRan on 2 CPU cores.\n")
    assert "over 2 seeds of the per-seed mean over 2 evaluated cases" in text
    assert "| Method | 1 (1 slice) | 4 (4 slices) | 10% (6 slices) |" in text
    assert (
        "| ddpm-ct + Unet decoder (frozen) | DSC 0.175 ± 0.025 / NSD 0.075 ± 0.025 | "
        "DSC 0.325 ± 0.025 / NSD 0.225 ± 0.025 | DSC 0.425 ± 0.025 / NSD 0.325 ± 0.025 |"
    ) in text
    smallest, largest = text.split("## Per-organ DSC at the smallest budget: 1 (1 slice)")[1].split(
        "## Per-organ DSC at the largest budget: 10% (6 slices)"
    )
    assert "| Organ | ImageNet + Unet | ddpm-ct + Unet decoder (frozen) |" in smallest
    assert "| Liver | 0.075 | **0.175** |" in smallest
    assert "| Inferior vena cava | 0.325 | **0.425** |" in largest
    assert "| **Mean** | 0.325 | **0.425** |" in largest
    assert text.rstrip().endswith("![Overlay](fig/o.png)")
    assert "goal" not in text.lower()


def test_markdown_marks_missing_budgets_and_uneven_seeds() -> None:
    rows = [r for r in _study() if not (r["method"] == "ddpm-unet" and (r["budget"] == "1" or r["seed"] == 1))]
    text = format_report_markdown(rows, title="t")
    assert "| ddpm-ct + Unet decoder (frozen) | – | DSC 0.300 / NSD 0.200 (1 seed) |" in text  # no ± for 1 seed
    assert "over 1–2 seeds" in text
    assert "| Liver | 0.075 | – |" in text


def test_one_seed_shows_no_spread_and_ties_are_never_bold() -> None:
    rows = [r for r in _study() if r["seed"] == 0]
    for r in rows:  # both methods tie on the liver at every budget
        r["Liver_DSC"] = 0.0
    text = format_report_markdown(rows, title="t")
    assert "±" not in text and "Values from 1 seed of the per-seed mean" in text
    assert "| Liver | 0.000 | 0.000 |" in text and "**0.000**" not in text


def test_each_protocol_gets_its_own_tables_and_the_training_table_lists_runs() -> None:
    rows = _study()
    rows += [
        {**r, "protocol": "cross-patient", "case": "OTHER", "mean_DSC": r["mean_DSC"] - 0.1}
        for r in _study()
        if r["case"] == "CASE_0001"
    ]
    for r in rows:
        r.update(steps=500, flattened="true" if r["seed"] == 0 else "false")
    text = format_report_markdown(rows, title="t")
    assert "## Held-out cases: mean organ DSC and NSD" in text and "## Cross-patient: mean organ DSC and NSD" in text
    assert "### Cross-patient: per-organ DSC at the smallest budget" in text
    assert "## Training runs" in text and "| ddpm-ct + Unet decoder (frozen) | 4 | 500 | 1 of 2 |" in text
    results = aggregate(rows)
    assert {r.protocol for r in results} == {"held-out cases", "cross-patient"}
    assert [r.n_cases for r in results if r.protocol == "cross-patient"] == [1] * 6


def test_single_budget_has_one_organ_table() -> None:
    text = format_report_markdown([r for r in _study() if r["budget"] == "4"], title="t")
    assert "## Per-organ DSC at the only budget: 4 (4 slices)" in text
    assert "smallest" not in text and "largest" not in text


def test_csv_round_trip_with_nan_and_extra_column(tmp_path: Path) -> None:
    rows = _study()[:3]
    rows[0]["RAG_DSC"] = math.nan
    rows[1]["encoder"] = "ddpm-ct"
    path = write_results_csv(rows, tmp_path / "results.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert tuple(header) == (*RESULT_COLUMNS, "encoder")
    assert header[:10] == [
        "method",
        "method_label",
        "budget",
        "n_train_slices",
        "seed",
        "case",
        "protocol",
        "mean_DSC",
        "mean_NSD",
        "train_seconds",
    ]
    assert ",nan," in path.read_text() and ",0.1800," in path.read_text()
    back = read_results_csv(path)
    assert len(back) == 3 and math.isnan(back[0]["RAG_DSC"])
    assert back[0]["budget"] == "4" and back[0]["seed"] == 0 and back[0]["n_train_slices"] == 4
    assert back[1]["encoder"] == "ddpm-ct" and back[0]["encoder"] == ""
    for original, parsed in zip(rows, back):
        for column in RESULT_COLUMNS:
            if isinstance(original[column], float) and not math.isnan(original[column]):
                assert parsed[column] == pytest.approx(original[column], abs=5e-5), column
            elif not isinstance(original[column], float):
                assert parsed[column] == original[column], column
    assert aggregate(back)[0].organ_dsc["Liver"] == pytest.approx(aggregate(rows)[0].organ_dsc["Liver"], abs=1e-4)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda lines: [], "is empty"),
        (lambda lines: ["method,budget", "x,4"], "lacks column.*method_label"),
        (
            lambda lines: [*lines[:2], lines[2].replace(",0,CASE", ",zero,CASE")],
            "line 3: seed is 'zero', expected an integer",
        ),
        (
            lambda lines: [lines[0], lines[1].replace("0.1800", "high", 1)],
            "line 2: mean_DSC is 'high', expected a number",
        ),
        (lambda lines: [*lines, "a,b,c"], "line 4 has 3 fields"),
    ],
)
def test_malformed_csv_names_file(tmp_path: Path, edit: Callable[[list[str]], list[str]], problem: str) -> None:
    path = tmp_path / "results.csv"
    lines = write_results_csv(_study()[:2], path).read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(InputFileError, match=problem) as info:
        read_results_csv(path)
    assert info.value.path == str(path) and str(path) in str(info.value)


def test_missing_csv_raises(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        read_results_csv(tmp_path / "nope.csv")


def _png(path: Path) -> np.ndarray:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def _plotted_rows(pixels: np.ndarray, color: str) -> np.ndarray:
    """Pixel rows (y) of ``color`` in the plot area (the legend lies in the bottom 10 % of the figure)."""
    area = pixels[: int(0.85 * len(pixels)), :, :3]
    return np.nonzero(np.abs(area - to_rgb(color)).max(-1) < 0.05)[0]


def test_plot_dsc_vs_budget(tmp_path: Path) -> None:
    pixels = _png(plot_dsc_vs_budget(_study(), tmp_path / "plot.png"))
    assert pixels.shape[1] / pixels.shape[0] == pytest.approx(7.5 / 5.0, rel=0.01)
    imagenet, ddpm = _plotted_rows(pixels, "C0"), _plotted_rows(pixels, "C1")  # methods in order of appearance
    assert len(imagenet) > 500 and len(ddpm) > 500
    assert ddpm.mean() < imagenet.mean()  # higher DSC is drawn higher up
    assert not plt.get_fignums()
    assert not list(tmp_path.glob(".*tmp*"))


def test_plot_single_budget_and_nsd(tmp_path: Path) -> None:
    rows = [r for r in _study() if r["budget"] == "10%"]
    pixels = _png(plot_dsc_vs_budget(rows, tmp_path / "one.png", metric="NSD"))
    imagenet, ddpm = _plotted_rows(pixels, "C0"), _plotted_rows(pixels, "C1")
    assert len(imagenet) > 40 and len(ddpm) > 40  # one dot with error bar per method
    assert ddpm.mean() < imagenet.mean()
    assert not plt.get_fignums()
    with pytest.raises(ConfigError, match="metric"):
        plot_dsc_vs_budget(rows, tmp_path / "bad.png", metric="HD95")  # type: ignore[arg-type]


def _slices(n: int = 2, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    image = np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2.5) ** 2, 60.0, -1000.0)
    gt = np.zeros((n, size, size), np.uint8)
    gt[:, 8:24, 8:24] = 1  # liver
    gt[:, 26:32, 20:30] = 3  # spleen
    return np.repeat(image[None], n, 0), gt


def test_render_overlays(tmp_path: Path) -> None:
    image, gt = _slices()
    pred = gt.copy()
    pred[1, 8:16] = 0
    one = _png(render_overlays(image, gt, {"A": pred}, tmp_path / "one.png", title="case 1"))
    three = _png(render_overlays(image, gt, {"A": pred, "B": gt, "C": np.zeros_like(gt)}, tmp_path / "three.png"))
    assert three.shape[1] / one.shape[1] == pytest.approx(5 / 3, rel=0.01)  # image, gt + one column per method
    tall = _png(render_overlays(*_slices(n=4), {"A": pred.repeat(2, 0)}, tmp_path / "tall.png"))
    assert tall.shape[1] == one.shape[1] and tall.shape[0] > 1.5 * one.shape[0]
    tissue = (60.0 + 160.0) / 400.0  # 60 HU in the (-160, 240) window
    liver = 0.5 * np.array(to_rgb(ORGAN_COLORS[0])) + 0.5 * tissue  # 50 % overlay on tissue
    tinted = np.abs(one[..., :3] - liver).max(-1) < 0.03
    assert tinted.sum() > 3 * 5000 and one[..., :3].std() > 0.2  # 3 liver panels of 16x16 px at 6x zoom
    assert not plt.get_fignums()


def test_render_overlays_accepts_windowed_images_and_checks_shapes(tmp_path: Path) -> None:
    image, gt = _slices(n=1)
    _png(render_overlays(image / 1000.0, gt, {}, tmp_path / "w.png", window=None, row_labels=["z=12"]))
    with pytest.raises(ValueError, match="B labels have shape"):
        render_overlays(image, gt, {"B": gt[:, :10]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="ids 0..13"):
        render_overlays(image, gt, {"B": gt + 13}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists() and not plt.get_fignums()


def test_slice_organ_dice_averages_present_organs() -> None:
    gt = np.zeros((4, 4), np.uint8)
    gt[:2, :2] = 1
    pred = gt.copy()
    pred[3, 3] = 5  # a false-positive aorta pixel: liver 1.0, aorta 0.0, the 11 absent organs are ignored
    assert slice_organ_dice(gt, pred, 14) == pytest.approx(0.5)
    assert slice_organ_dice(gt, gt, 14) == 1.0
    assert math.isnan(slice_organ_dice(np.zeros_like(gt), np.zeros_like(gt), 14))


def test_write_report(tmp_path: Path) -> None:
    image, gt = _slices()
    overlay = render_overlays(image, gt, {"A": gt}, tmp_path / "figs" / "overlay.png")
    summary = write_report(
        _study(), tmp_path / "report", title="Study", context="ctx", overlays=[("Case 1 overlays", overlay)]
    )
    assert summary == tmp_path / "report" / "summary.md"
    assert sorted(p.name for p in summary.parent.iterdir()) == ["dsc_vs_budget.png", "results.csv", "summary.md"]
    text = summary.read_text()
    assert "![Mean organ DSC vs label budget](dsc_vs_budget.png)" in text
    assert "![Case 1 overlays](../figs/overlay.png)" in text
    assert read_results_csv(summary.parent / "results.csv")[5]["case"] == _study()[5]["case"]


def test_headline_mean_is_over_organs_present_and_old_files_fall_back() -> None:
    """A scan with 2 of 13 organs: the FLARE mean is dominated by the 11 absent ones (1.0 each when nothing is
    predicted there); the headline averages the present ones, and the report and plot say so."""
    row = _row("ddpm-unet", "4", 0, "A", 1.0, Liver=0.5, Spleen=0.3)
    row |= {"present_DSC": 0.4, "present_NSD": 0.3, "organs_present": "Liver Spleen"}
    (result,) = aggregate([row])
    assert result.dsc_mean == pytest.approx(0.4) and result.nsd_mean == pytest.approx(0.3)
    assert result.flare_dsc_mean == pytest.approx((11 + 0.8) / 13)
    assert result.averaged_over == "present organs"
    text = format_report_markdown([row], title="t")
    assert "mean over organs present in the ground truth" in text
    assert (
        "| **Mean over organs present in the ground truth** | 0.400 |" in text
        and "| FLARE mean over 13 organs | 0.908 |" in text
    )
    (old,) = aggregate([_row("ddpm-unet", "4", 0, "A", 1.0, Liver=0.5, Spleen=0.3)])  # written before the column
    assert old.averaged_over == "13 organs" and old.dsc_mean == pytest.approx((11 + 0.8) / 13)
    assert "mean over the 13 FLARE 2022 organs" in format_report_markdown(
        [_row("ddpm-unet", "4", 0, "A", 0.5)], title="t"
    )


def test_present_columns_survive_the_csv_round_trip(tmp_path: Path) -> None:
    row = _row("ddpm-unet", "4", 0, "A", 0.5) | {"present_DSC": 0.4, "present_NSD": 0.3, "organs_present": "Liver"}
    (back,) = read_results_csv(write_results_csv([row], tmp_path / "r.csv"))
    assert back["organs_present"] == "Liver" and back["present_DSC"] == pytest.approx(0.4)
    assert aggregate([back])[0].dsc_mean == pytest.approx(0.4)


def test_organs_present_names_the_labels_in_the_ground_truth() -> None:
    from smp_diffusion_encoder.study.protocol import organs_present

    gt = np.zeros((2, 4, 4), dtype=np.uint8)
    gt[0, 0, 0], gt[1, 2, 2] = 13, 1
    assert organs_present(gt) == ["Liver", "LK"]
    assert organs_present(np.zeros((1, 2, 2), dtype=np.uint8)) == []
