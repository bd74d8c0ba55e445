#!/bin/bash
# latin-print's third training session (models/README.md), as it ran on a lent GPU machine
# (one H200, 16 cores, its own python3 with torch; nothing installed from the network): fresh
# crnn synth lines on all cores, then training continued from the bundled model on the GPU,
# all within TOTAL_SECONDS. Run from the repository root, with .gpu/ holding what the machine
# lacks: lines4.txt (bench/make_latin_text.py --seed 5), fonts/ (the training fonts) and a
# rapidfuzz wheel for its Python. Results land in $OUT.
# Usage: bash bench/latin_print_gpu.sh COUNT TOTAL_SECONDS DEVICE
set -u
COUNT=${1:-120000}; TOTAL=${2:-500}; DEV=${3:-cuda}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
export PYTHONUNBUFFERED=1
if ! python3 -c "import rapidfuzz" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/rapidfuzz-*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
# the installed layout (crnn_core.cli, crnn_core.models) from the source tree, without a wheel
ln -sfn ../cli crnn_core/cli; ln -sfn ../models crnn_core/models
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
crnn() { python3 -c 'import sys; from crnn_core.cli.app import main; sys.exit(main())' "$@"; }
nvidia-smi -L 2>/dev/null; nproc
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
crnn synth /tmp/data4 --text .gpu/lines4.txt --count "$COUNT" --fonts .gpu/fonts --seed 5 --workers "$(nproc)" \
  --val-fraction 0.03 --json > "$OUT/synth.json" 2> "$OUT/synth.log" || { tail -5 "$OUT/synth.log"; exit 1; }
T1=$(date +%s); echo "synth: $COUNT samples in $((T1-T0)) s"
LEFT=$(( TOTAL - (T1-T0) ))
MIN=$(python3 -c "print(round($LEFT/60, 2))"); echo "training budget: $MIN min"
crnn train /tmp/data4 --init models/latin-print.pt --alphabet union --out /tmp/run4 --max-minutes "$MIN" \
  --epochs 30 --patience 30 --batch-size 64 --device "$DEV" 2> "$OUT/train.log"
rc=$?
tail -40 "$OUT/train.log"
cp /tmp/run4/best.pt /tmp/run4/metrics.jsonl /tmp/run4/config.yaml "$OUT/" 2>/dev/null
echo "rc=$rc total $(( $(date +%s)-T0 )) s"
