"""Which slices to label next (``smp-diffusion suggest``): uncertainty per slice, diverse greedy picks, outputs.

- :mod:`.config`: :class:`SuggestConfig` (no torch; the CLI is built from it).
- :mod:`.inputs`: the scans to rank (:func:`find_scans`) and their labeled slices (:func:`labeled_slices`).
- :mod:`.uncertainty`: per-slice uncertainty of a model (:func:`measure_slices`: error, entropy, tta).
- :mod:`.ranking`: the greedy rule (:func:`rank_slices`): apart along z, spread over scans, never a labeled slice.
- :mod:`.sheet`: the contact sheet PNG.
- :mod:`.suggest`: :func:`suggest` and :func:`write_suggestions` (CSV, JSON, PNG, sidecars).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["SuggestConfig"],
        "inputs": ["Scan", "find_scans", "labeled_slices", "read_scan_images"],
        "ranking": ["Candidate", "Pick", "rank_slices"],
        "sheet": ["SheetEntry", "render_contact_sheet"],
        "suggest": ["SuggestResult", "Suggestion", "suggest", "write_suggestions"],
        "uncertainty": ["MEASURES", "SliceUncertainty", "measure_slices"],
    },
)
