#!/bin/sh
# The next GPU session's one training call (docs/benchmarks.md, "Plan for the next session
# with a GPU"): the machine's idle cores make fresh causal episodes (scripts/device-gen.sh,
# from the carried .devkit) while three arms train from scratch on them as they come
# (--grow-data) and on the carried DATA; then each arm is continued at onset weight 10,
# still on the growing data. The continued arms come back as arms.tar.* in $OUT
# (cat arms.tar.* | tar x; each arms/NAME/last/part0+part1). With device time left, a
# second call on the warm machine trains them on: scripts/device-continue.sh.
# All three arms have the clock, the output history and an onset clock (hc3oc of the
# 2026-11-28 H200 session); they differ in the floor loss, which at weight 4 kept the
# pause bar on both splits but answered two turns in five (docs/benchmarks.md):
#   hc3o:   onset weight 3, no floor loss (the 2026-11-28 hc3o recipe)
#   hc3of1: the same with --floor-weight 1
#   hc3of2: the same with --floor-weight 2
# Run there as: OUT=$OUT sh scripts/device-plan.sh DATA   (carry .devkit and DATA, a shard
# folder that fits beside the kit, e.g. data/c3q/train), with the call's timeout_s = LIMIT
# + 10 or more.
# LIMIT: seconds the whole plan may take (default 580); S1: stage 1's training time
# (default 240: stage 1 took 413 s in all with 300, which left stage 2 77 s); stage 2
# gets what is left after ~90 s for its start and the packing.
# Stage 1's arms come back in $OUT/s1 until stage 2's have landed, so a call cut by its
# time limit still returns them. SCALE: `microturn data --scale` of the generation
# (default 12: 18,480 episodes, more than a call makes); GEN_WORKERS: its processes
# (default half the cores; it runs niced, with one writer thread per two workers).
# If generation fails (the kit does not load there), the arms train on DATA alone.
# Rehearse here: PATH=.venv/bin:$PATH DEVICE=cpu S1=20 LIMIT=1500 EXTRA="--batch 2"
# SCALE=0.2 GEN_WORKERS=1 OUT=/tmp/plan sh scripts/device-plan.sh D (after PYVER=3.11 sh
# scripts/device-kit.sh).
set -eu
DATA=$1
T0=$(date +%s)
LIMIT=${LIMIT:-580}; S1=${S1:-240}; EXTRA=${EXTRA:-}; OUT=${OUT:-/tmp/out}
GEN=/tmp/gen
cores=$(nproc); [ "$cores" -le 16 ] || cores=16  # the lent machines have 16
if sh scripts/device-gen.sh "$GEN" 5000000 "${SCALE:-12}" \
    "${GEN_WORKERS:-$(( cores > 3 ? cores / 2 : 1 ))}"; then
    # the first shards take the workers' start (~10 s) and one shard's compression (~10 s)
    for _ in $(seq 45); do
        [ "$(find "$GEN/train" -name 'shard-*.npz' 2>/dev/null | wc -l)" -ge 3 ] && break
        if ! kill -0 "$(cat /tmp/gen.pid)" 2>/dev/null; then
            echo "the generator stopped:"; tail -5 /tmp/gen.log; break
        fi
        sleep 1
    done
else
    echo "generation on the machine failed: the arms train on $DATA alone"
fi
mkdir -p "$GEN/train"
ALL="$GEN/train,$DATA"
BASE="--clock-octaves 7 --onset-clock-turns 80 --onset-weight 3 --grow-data $EXTRA"
OUT=$OUT/s1 sh scripts/device-arms.sh "$ALL" 9000 "$S1" \
    "hc3o $BASE" "hc3of1 $BASE --floor-weight 1" "hc3of2 $BASE --floor-weight 2"
S2=$(( LIMIT - ($(date +%s) - T0) - 90 ))
if [ "$S2" -ge 30 ]; then
    echo "stage 2: $S2 s"
    NEXT="--lr 5e-4 --warmup 50 --onset-weight 10 --grow-data $EXTRA"
    sh scripts/device-arms.sh "$ALL" 9000 "$S2" \
        "hc3ob --init /tmp/run-hc3o $NEXT" "hc3of1b --init /tmp/run-hc3of1 $NEXT --floor-weight 1" \
        "hc3of2b --init /tmp/run-hc3of2 $NEXT --floor-weight 2"
    rm -rf "$OUT/s1"  # the return holds 64 MiB: the continued arms replace stage 1's
else
    echo "no time left for stage 2 ($S2 s): stage 1's arms are in s1/"
fi
pkill -f "microturn.cli data" || true
echo "generated: $(find "$GEN/train" -name 'shard-*.npz' | wc -l) shards in $GEN/train;" \
    "$(( $(date +%s) - T0 )) s in all"
tr '\r' '\n' </tmp/gen.log 2>/dev/null | tail -2 || true
