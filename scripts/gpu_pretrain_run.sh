#!/usr/bin/env bash
# The prepared GPU pretraining run of issue 23 (one H200): measure, pretrain, 256 px throughput -> $OUT.
#
#   OUT=/path/to/results scripts/gpu_pretrain_run.sh [options of scripts/gpu_pretrain.py]
#
# The store comes from scripts/gpu_prepare.sh (default .gpu/store128); the exact device command and what
# comes back are in benchmarks/results/gpu_pretrain.md ("How to run"). Wheels in .whl/ (lazy_loader,
# wrapt) are installed only where python cannot import those packages (the device image lists both).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
if ! "$PYTHON" -c "import lazy_loader, wrapt" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        echo "installing $(ls .whl) into $SITE"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            .whl/*.whl || exit 3
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "error: python lacks lazy_loader or wrapt and .whl/ holds no wheels (scripts/gpu_prepare.sh)" >&2
        exit 3
    fi
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" scripts/gpu_pretrain.py --out "${OUT:?set OUT to the results folder}" --store .gpu/store128 "$@"
