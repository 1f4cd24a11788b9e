#!/usr/bin/env bash
# One-shot check on a GPU machine without internet: the package importable, a 1-GPU smoke
# pretrain, then the GPU bench. Its JSON goes to $OUT when set, else to docs/results/.
#   bash experiments/gpu_check.sh [bench args, e.g. --workloads jets or --quick]
# Bring along what such a machine lacks: data/bench/jets32_n5120_seed0.h5 (Pythia makes the jets
# and is not there; the natural images are made on the spot) and, where its Python lacks them,
# the dependencies as wheels in .whl/ (hydra-core, omegaconf, wandb, ...). Each part has a
# timeout; the bench rewrites its JSON after each measurement, so a cut-short run keeps its cells.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# the package from this tree, in every process the bench starts: no install, no build backend
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE=offline WANDB_SILENT=true PYTHONUNBUFFERED=1

if ! "$PY" -c "import ssl_lightning.train" 2>/dev/null && [ -d .whl ]; then
  timeout 120 "$PY" -m pip install -q --no-index --no-deps .whl/*.whl
fi
"$PY" -c "import ssl_lightning.train" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== smoke: ssl-train hardware=gpu debug=fast"
timeout 120 "$PY" -m ssl_lightning.train hardware=gpu debug=fast dataset=synthetic \
  augment=natural "hydra.run.dir=$(mktemp -d)"
echo "== smoke: exit $?"

echo "== bench: GPU grid"
out_dir=${OUT:-docs/results}
timeout "${BENCH_TIMEOUT:-400}" "$PY" experiments/bench.py --device gpu \
  --out "$out_dir/bench_gpu_$(date +%F).json" "$@"
echo "== bench: exit $?"
