"""Few-shot study results: aggregation over seeds, ``results.csv``, figures and a markdown report.

- :mod:`.results`: the per-case rows, their CSV file, :func:`aggregate` into :class:`BudgetResult`.
- :mod:`.figures`: :func:`plot_dsc_vs_budget`, :func:`render_overlays`.
- :mod:`.report`: :func:`format_report_markdown`, :func:`write_report`.
"""

from smp_diffusion_encoder.study.figures import ORGAN_COLORS, plot_dsc_vs_budget, render_overlays
from smp_diffusion_encoder.study.report import format_report_markdown, write_report
from smp_diffusion_encoder.study.results import (
    RESULT_COLUMNS,
    BudgetResult,
    aggregate,
    budget_slices,
    read_results_csv,
    write_results_csv,
)

__all__ = [
    "ORGAN_COLORS",
    "RESULT_COLUMNS",
    "BudgetResult",
    "aggregate",
    "budget_slices",
    "format_report_markdown",
    "plot_dsc_vs_budget",
    "read_results_csv",
    "render_overlays",
    "write_report",
    "write_results_csv",
]
