"""The few-shot study: protocol (train once, score on every held-out set), results, figures and report.

- :mod:`.config`: :class:`StudyConfig` (no torch).
- :mod:`.protocol`: :func:`holdout`, :func:`run_study`, :func:`standard_methods`.
- :mod:`.scoring`: :func:`score` (a model on a labeled scan, as ``predict`` + ``evaluate``), :func:`slice_metrics`.
- :mod:`.results`: the per-case rows, their CSV file, :func:`aggregate` into :class:`BudgetResult`.
- :mod:`.figures`: :func:`plot_dsc_vs_budget`, :func:`render_overlays`.
- :mod:`.report`: :func:`format_report_markdown`, :func:`write_report`.
- :mod:`.demo`: ``smp-diffusion demo``.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["StudyConfig"],
        "figures": ["ORGAN_COLORS", "plot_dsc_vs_budget", "render_overlays"],
        "protocol": ["Holdout", "Method", "holdout", "run_study", "standard_methods"],
        "report": ["format_report_markdown", "write_report"],
        "results": [
            "RESULT_COLUMNS",
            "BudgetResult",
            "aggregate",
            "budget_slices",
            "read_results_csv",
            "write_results_csv",
        ],
        "scoring": ["organs_present", "score", "slice_metrics"],
    },
)
