"""Evaluation: FLARE 2022-exact per-organ DSC/NSD (``flare``) on surfel-based surface distances (``surface``).

Example:
    >>> from smp_diffusion_encoder.evaluation import evaluate_folder, write_metrics_csv  # doctest: +SKIP
    >>> results = evaluate_folder("predictions/", "labels/")                            # doctest: +SKIP
    >>> write_metrics_csv(results, "metrics.csv")                                        # doctest: +SKIP
"""

from smp_diffusion_encoder.evaluation.flare import (
    FLARE22_TOLERANCES_MM,
    MEAN_FLARE,
    MEAN_PRESENT,
    METRIC_COLUMNS,
    NSD_MIN_DSC,
    Z_RESTRICTED_ORGANS,
    CaseResult,
    case_metrics,
    evaluate_case,
    evaluate_folder,
    format_summary_markdown,
    load_label_map,
    mean_slice_dice,
    slice_dice,
    slice_organ_dice,
    summarize,
    write_metrics_csv,
    write_summary_markdown,
)
from smp_diffusion_encoder.evaluation.surface import (
    SurfaceDistances,
    compute_surface_distances,
    dice_coefficient,
    normalized_surface_dice,
    surface_dice_at_tolerance,
    surfel_area_table,
)

__all__ = [
    "FLARE22_TOLERANCES_MM",
    "MEAN_FLARE",
    "MEAN_PRESENT",
    "METRIC_COLUMNS",
    "NSD_MIN_DSC",
    "Z_RESTRICTED_ORGANS",
    "CaseResult",
    "SurfaceDistances",
    "case_metrics",
    "compute_surface_distances",
    "dice_coefficient",
    "evaluate_case",
    "evaluate_folder",
    "format_summary_markdown",
    "load_label_map",
    "mean_slice_dice",
    "normalized_surface_dice",
    "slice_dice",
    "slice_organ_dice",
    "summarize",
    "surface_dice_at_tolerance",
    "surfel_area_table",
    "write_metrics_csv",
    "write_summary_markdown",
]
