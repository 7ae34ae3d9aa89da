#!/bin/sh
# The next GPU session's training call (docs/benchmarks.md, "Plan for the next session
# with a GPU"): three arms from scratch side by side on the causal sets, then each
# continued at onset weight 10, all in one device call; the continued arms come back
# as arms.tar.* in $OUT (cat arms.tar.* | tar x; each arms/NAME/last/part0+part1).
#   hc3:   clock + output history, onset weight 3 (the H200 session's hc3 recipe)
#   hc3s1: the same, another seed (is a difference between runs the seed's?)
#   hc3f:  the same with the calibrated floor loss (--floor-weight 4)
# Run there as: sh scripts/device-plan.sh DATA   (DATA: comma-separated shard folders,
# e.g. /tmp/c1a,/tmp/c1b,/tmp/c2a,data/c2b/train after the copy calls)
# S1 / S2: each stage's time limit in seconds (default 330 / 140, for a call of ~560 s).
# Rehearse here: DEVICE=cpu S1=20 S2=10 EXTRA="--batch 2" OUT=/tmp/plan sh scripts/device-plan.sh D
# (with PATH=.venv/bin:$PATH). Each arm holds the data in memory: ~11 GB for the four
# halves, so three arms fit the device's 128 GiB but not this machine's 24 GB (the
# third is killed here; the others run through, packed and tarred).
set -eu
DATA=$1
S1=${S1:-330}; S2=${S2:-140}; EXTRA=${EXTRA:-}
BASE="--clock-octaves 7 --onset-weight 3 $EXTRA"
OUT=/tmp/stage1 sh scripts/device-arms.sh "$DATA" 9000 "$S1" \
    "hc3 $BASE" "hc3s1 $BASE --seed 1" "hc3f $BASE --floor-weight 4"
rm -rf /tmp/arms  # the stage-1 packs: only the continued arms come back
NEXT="--lr 5e-4 --warmup 50 --onset-weight 10 $EXTRA"
sh scripts/device-arms.sh "$DATA" 9000 "$S2" \
    "hc3b --init /tmp/run-hc3 $NEXT" "hc3s1b --init /tmp/run-hc3s1 $NEXT --seed 1" \
    "hc3fb --init /tmp/run-hc3f $NEXT --floor-weight 4"
