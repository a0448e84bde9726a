"""The command line answers ``--help`` and argument errors without importing torch; importing the package
imports no torch either (registration waits for smp / timm)."""

from __future__ import annotations

import json
import subprocess
import sys

from smp_diffusion_encoder.cli.main import SUBCOMMANDS
from tests.training.helpers import REPO, cli_env

PROBE = """
import json, sys, time
tick = time.perf_counter()
from smp_diffusion_encoder.cli.main import main
results = {}
for argv in %s:
    try:
        main(argv)
    except SystemExit as exit:
        results[" ".join(argv)] = exit.code
import smp_diffusion_encoder
print(json.dumps({"codes": results, "torch": "torch" in sys.modules, "smp": "segmentation_models_pytorch" in sys.modules,
                  "seconds": time.perf_counter() - tick}))
"""


def _probe(argvs: list[list[str]]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE % json.dumps(argvs)],
        env=cli_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_help_of_every_subcommand_and_argument_errors_do_not_import_torch() -> None:
    names = [m.rsplit(".", 1)[1].replace("_", "-").replace("prepare", "prepare-slices") for m in SUBCOMMANDS]
    argvs = [
        ["--help"],
        *([n, "--help"] for n in names),
        ["finetune"],
        ["pretrain", "--steps", "many"],
        ["no-such-command"],
    ]
    out = _probe(argvs)
    assert not out["torch"] and not out["smp"], out
    assert out["codes"]["--help"] == 0 and all(out["codes"][f"{n} --help"] == 0 for n in names)
    assert out["codes"]["finetune"] == 2 and out["codes"]["pretrain --steps many"] == 2
    assert out["codes"]["no-such-command"] == 2


def test_every_subcommand_has_a_one_line_description_and_options_state_defaults() -> None:
    from smp_diffusion_encoder.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for choice in sub._choices_actions:  # the one-line help shown by `smp-diffusion --help`
        assert choice.help and "\n" not in choice.help and "``" not in choice.help, choice.dest
    for name, p in sub.choices.items():
        assert p.description and "``" not in p.description and ":mod:" not in p.description, name
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"
            if action.option_strings and action.help and action.dest not in ("help",) and not action.required:
                flag = action.__class__.__name__ in ("_StoreTrueAction", "BooleanOptionalAction")
                assert flag or "default" in action.help, f"{name} {action.option_strings}: {action.help}"
