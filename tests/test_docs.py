"""Every docstring example of the package runs (doctest), so the documentation cannot drift from the code.

Examples that need files or the network say ``# doctest: +SKIP``; the rest execute here. The README's Python
blocks run in ``tests/test_readme.py``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import smp_diffusion_encoder

MODULES = sorted(m.name for m in pkgutil.walk_packages(smp_diffusion_encoder.__path__, "smp_diffusion_encoder."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, tmp_path, monkeypatch) -> None:
    import segmentation_models_pytorch as smp
    import torch

    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    globs = {"torch": torch, "np": __import__("numpy"), "smp": smp, **vars(module)}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs=globs):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
