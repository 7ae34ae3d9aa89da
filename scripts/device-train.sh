#!/bin/sh
# Train on a lent GPU machine from shards made here (`microturn data --out data`), then
# bring the best and last checkpoints back in float16, cut under the 16 MiB per-file
# return limit (reassemble with: cat part0 part1 > model.safetensors).
# Run there as: sh scripts/device-train.sh data/train data/eval STEPS TIME_LIMIT_S [extra flags]
# (RUN=/tmp/other OUT=... for a second run beside the first: on an H100 the tiny preset
# ran at ~5 steps/s each side by side against ~7 alone; PACK=last brings back only the
# last checkpoint; DEVICE=cpu rehearses a plan here with a few steps.)
# (carry data/train and data/eval; the machine has torch but no librosa or synthesizers,
# which training does not need.)
# A later call's working tree drops what an earlier call carried: to train on more than
# one call can carry (64 MiB), copy a carried set to the machine's /tmp in one call
# (cp -r data/train /tmp/set1) and name /tmp/set1,data2/train in the next. EVAL may be ""
# (no in-loop evaluation: every second goes to steps).
set -eu
DATA=$1; EVAL=$2; STEPS=$3; LIMIT=$4; shift 4
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -m microturn.train "$DATA" "${RUN:-/tmp/run}" --steps "$STEPS" --batch 32 --lr 2e-3 --warmup 200 \
    --device "${DEVICE:-cuda}" --log-every 50 --save-every 100000 --time-limit-s "$LIMIT" \
    --eval-data "$EVAL" --eval-every 400 "$@" 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -25
python3 scripts/pack-checkpoint.py "${RUN:-/tmp/run}" "${OUT:-/tmp/out}" ${PACK:-}
