"""Registration on import, without importing torch: smp and timm learn the names when they are imported.

Importing :mod:`smp_diffusion_encoder` calls :func:`install`, which asks ``wrapt``'s post-import hooks to run
the writers (:mod:`.smp_names`, :mod:`.timm_names`) once ``segmentation_models_pytorch`` / ``timm`` have
finished importing (at once for one that already has). So ``import smp_diffusion_encoder`` costs no torch
import (the command line stays light) and ``smp.Unet("ddpm-ct")`` / ``timm.create_model("ddpm_ct_unet")``
work whichever of the packages the user imports first. The writers touch no file.

A writer imports the encoder module it registers, and that module imports smp (or timm) itself. When the
user's first import of smp comes from inside such a module (``from smp_diffusion_encoder.encoder import
DDPMEncoder`` before ``import segmentation_models_pytorch``), smp finishes while the encoder module is still
half-imported; the writer then waits until every module involved has finished (each completion is watched
too) and runs once, from the last one.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import wrapt

#: library -> (modules of ours that the writer needs, writer module; importing the writer registers).
_WRITERS: dict[str, tuple[str, str]] = {
    "segmentation_models_pytorch": (
        "smp_diffusion_encoder.encoder.smp_encoder",
        "smp_diffusion_encoder.registry.smp_names",
    ),
    "timm": ("smp_diffusion_encoder.encoder.timm_model", "smp_diffusion_encoder.registry.timm_names"),
}
_finished: set[str] = set()  # watched modules that have finished importing
_written: set[str] = set()  # libraries whose names are written
_busy = False
_installed = False


def _finished_import(module: ModuleType) -> None:
    _finished.add(module.__name__)
    _sync()


def _sync() -> None:
    """Run every writer whose library has finished importing and none of whose modules is half-imported."""
    global _busy
    if _busy:
        return
    for library, ours in _WRITERS.items():
        if library in _written or library not in _finished:
            continue
        if any(name in sys.modules and name not in _finished for name in ours):
            continue  # one of our modules is still importing: its completion calls _sync again
        _busy = True
        try:
            writer = importlib.import_module(ours[1])
            if library == "segmentation_models_pytorch":
                writer.write_all()
            _written.add(library)
        finally:
            _busy = False


def install() -> None:
    """Register the names with smp and timm now or when they are imported (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    for library, ours in _WRITERS.items():
        for name in (*ours, library):  # libraries last: one that is already imported syncs at once
            wrapt.register_post_import_hook(_finished_import, name)
