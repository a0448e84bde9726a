#!/usr/bin/env bash
# Prepare what the GPU run (scripts/gpu_pretrain_run.sh) carries, on this machine (no GPU needed):
#   .gpu/store128/  slice store of the seven unlabeled real CT volumes REALCT_Un_0001..0007, `small` preset
#                   preprocessing (128 px, 3 mm pixels, HU window -160..240: the shipped ddpm-ct weights')
#   .whl/           lazy_loader and wrapt wheels for the device's Python 3.12 (used only if it lacks them)
# Both folders are git-ignored; name them in the device tool's `carry`. Never the labeled or cross-patient case.
#
#   scripts/gpu_prepare.sh            SHARED (default ../shared) and PYTHON (default .venv/bin/python) may be set
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
SHARED=${SHARED:-../shared}
STORE=.gpu/store128
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's package, not an installed one

"$PYTHON" -m smp_diffusion_encoder.cli.main prepare-slices \
    "$SHARED/data/realct/Training/FLARE22_UnlabeledCase1-1000" "$SHARED/data/realct_extra/unlabeled" \
    "$STORE" --image-size 128 --spacing-mm auto --hu-window -160 240 --workers 2 --no-progress
"$PYTHON" - "$STORE" <<'PY'
import json, sys
from pathlib import Path
manifest = json.loads((Path(sys.argv[1]) / "manifest.json").read_text())
names = sorted(Path(s["source"]).name for s in manifest["shards"])
expected = [f"REALCT_Un_{i:04d}_0000.nii.gz" for i in range(1, 8)]
assert names == expected and not manifest["bad"], f"store holds {names}, bad {manifest['bad']}; expected {expected}"
assert manifest["preprocessing"] == {"hu_window": [-160.0, 240.0], "image_size": 128, "spacing_mm": 3.0}, manifest["preprocessing"]
print(f"{manifest['n_slices']} slices of {len(names)} volumes: {', '.join(n.split('_0000')[0] for n in names)}")
PY

mkdir -p .whl
pins=$(grep -E '^(lazy_loader|wrapt)==' constraints.txt)
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl $pins
du -sh "$STORE" .whl
