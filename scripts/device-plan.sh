#!/bin/sh
# The next GPU session's one training call (docs/benchmarks.md, "Plan for the next session
# with a GPU"): the machine's idle cores make fresh causal episodes (scripts/device-gen.sh,
# from the carried .devkit) while three arms train from scratch on them as they come
# (--grow-data) and on the carried DATA; then each arm is continued at onset weight 10,
# still on the growing data. The continued arms come back as arms.tar.* in $OUT
# (cat arms.tar.* | tar x; each arms/NAME/last/part0+part1).
#   hc3:   clock + output history, onset weight 3 (the H200 session's hc3 recipe)
#   hc3s1: the same, another seed (is a difference between runs the seed's?)
#   hc3f:  the same with the calibrated floor loss (--floor-weight 4)
# Run there as: OUT=$OUT sh scripts/device-plan.sh DATA   (carry .devkit and DATA, a shard
# folder that fits beside the kit, e.g. data/c1q/train)
# S1 / S2: each stage's time limit in seconds (default 330 / 140, for a call of ~560 s);
# SCALE: `microturn data --scale` of the generation (default 12: 18,480 episodes, more
# than a call makes); GEN_WORKERS: its processes (default all cores but four, which the
# three trainers and the shard writers share).
# If generation fails (the kit does not load there), the arms train on DATA alone.
# Rehearse here: PATH=.venv/bin:$PATH DEVICE=cpu S1=20 S2=10 EXTRA="--batch 2" SCALE=0.2
# GEN_WORKERS=1 OUT=/tmp/plan sh scripts/device-plan.sh D (after PYVER=3.11 sh
# scripts/device-kit.sh).
set -eu
DATA=$1
S1=${S1:-330}; S2=${S2:-140}; EXTRA=${EXTRA:-}
GEN=/tmp/gen
cores=$(nproc)
if sh scripts/device-gen.sh "$GEN" 5000000 "${SCALE:-12}" \
    "${GEN_WORKERS:-$(( cores > 6 ? cores - 4 : 2 ))}"; then
    # the first shards take the workers' start (~10 s) and one shard's compression (~10 s)
    for _ in $(seq 120); do
        [ "$(find "$GEN/train" -name 'shard-*.npz' 2>/dev/null | wc -l)" -ge 3 ] && break
        sleep 1
    done
else
    echo "generation on the machine failed: the arms train on $DATA alone"
fi
mkdir -p "$GEN/train"
ALL="$GEN/train,$DATA"
BASE="--clock-octaves 7 --onset-weight 3 --grow-data $EXTRA"
OUT=/tmp/stage1 sh scripts/device-arms.sh "$ALL" 9000 "$S1" \
    "hc3 $BASE" "hc3s1 $BASE --seed 1" "hc3f $BASE --floor-weight 4"
rm -rf /tmp/arms  # the stage-1 packs: only the continued arms come back
NEXT="--lr 5e-4 --warmup 50 --onset-weight 10 --grow-data $EXTRA"
sh scripts/device-arms.sh "$ALL" 9000 "$S2" \
    "hc3b --init /tmp/run-hc3 $NEXT" "hc3s1b --init /tmp/run-hc3s1 $NEXT --seed 1" \
    "hc3fb --init /tmp/run-hc3f $NEXT --floor-weight 4"
pkill -f "microturn.cli data" || true
echo "generated: $(find "$GEN/train" -name 'shard-*.npz' | wc -l) shards in $GEN/train"
tr '\r' '\n' </tmp/gen.log 2>/dev/null | tail -2 || true
