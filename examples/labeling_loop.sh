#!/usr/bin/env bash
# The labeling loop on the shipped demo data: label 4 slices, train, ask which slices to label next, label those,
# retrain, and look at another patient's scan after each round. Every smp-diffusion command is what a user runs;
# examples/label_slices.py stands in for the person who labels in 3D Slicer or ITK-SNAP (it copies the chosen
# slices from the demo's full label map).
#
#   bash examples/labeling_loop.sh [WORK_DIR]          # from the repository root; about 10 min on 2 CPU cores
#
# SMP_DIFFUSION (default: smp-diffusion), PYTHON (default: python) and FINETUNE_OPTIONS (extra finetune options,
# e.g. a tiny encoder for tests) may be set in the environment.
set -euo pipefail
WORK=${1:-labeling_loop}
SMP=${SMP_DIFFUSION:-smp-diffusion}
PY=${PYTHON:-python}
OPTS=${FINETUNE_OPTIONS:-}
DEMO=$($PY -c "import pathlib, smp_diffusion_encoder as m; print(pathlib.Path(m.__file__).parent / 'demo_data')")
TRAIN=$DEMO/train/REALCT_Tr_0001           # the scan you label (NIfTI)
OTHER=$DEMO/test/REALCT_Ts_0001            # another patient (a DICOM series), never labeled, only looked at

# Round 1: label 4 slices spread over the organs, train on exactly those (a partly labeled scan: the sidecar
# label.slices.json lists the labeled slices; --budget all trains on every one of them).
$PY examples/label_slices.py "$TRAIN/image.nii.gz" "$TRAIN/label.nii.gz" "$WORK/cases/REALCT_Tr_0001" --evenly 4
$SMP finetune "$WORK/cases" --budget all --out "$WORK/round1" --no-progress $OPTS
$SMP predict "$OTHER" --model "$WORK/round1/model" --out "$WORK/round1/other" --no-progress
$SMP evaluate "$WORK/round1/other" "$DEMO/test" --out "$WORK/round1/other.csv" --no-progress

# Which 4 slices next? Suggestions, a contact sheet and a sidecar with the labeled + suggested slices.
$SMP suggest "$WORK/cases" --model "$WORK/round1/model" --out "$WORK/suggest1" --n 4 --no-progress

# Round 2: label the suggested slices (here: copied from the full map), retrain on all 8.
$PY examples/label_slices.py "$TRAIN/image.nii.gz" "$TRAIN/label.nii.gz" "$WORK/cases/REALCT_Tr_0001" \
    --sidecar "$WORK/suggest1/sidecars/REALCT_Tr_0001.slices.json"
$SMP finetune "$WORK/cases" --budget all --out "$WORK/round2" --no-progress $OPTS
$SMP predict "$OTHER" --model "$WORK/round2/model" --out "$WORK/round2/other" --no-progress
$SMP evaluate "$WORK/round2/other" "$DEMO/test" --out "$WORK/round2/other.csv" --no-progress
$SMP suggest "$WORK/cases" --model "$WORK/round2/model" --out "$WORK/suggest2" --n 4 --no-progress
