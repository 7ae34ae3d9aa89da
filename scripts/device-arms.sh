#!/bin/sh
# Several arms of scripts/device-train.sh side by side on one lent GPU, on the same data
# and batches (seed 0), without in-loop evaluation. The tiny preset leaves an H200 mostly
# idle: two arms ran at the speed of one (2026-11-26), three at 293,000-300,000 tokens/s
# each against 364,000 for one alone (2026-11-27). Their last checkpoints come back as
# one tar cut into 15 MiB pieces, as the machine returns at most 8 files:
#   cat arms.tar.* | tar x   (then arms/NAME/last/part0+part1 as in device-train.sh)
# Run there as: sh scripts/device-arms.sh DATA STEPS TIME_LIMIT_S "NAME FLAGS..." ...
# With a time limit the cosine ends with the time (TrainConfig.time_limit_s), so STEPS
# can be a cap above what fits.
set -eu
DATA=$1; STEPS=$2; LIMIT=$3; shift 3
rm -rf /tmp/arms  # what is packed below is all of it: an earlier call's arms stay out
for arm in "$@"; do
    name=${arm%% *}
    # shellcheck disable=SC2086  # the flags are meant to split
    RUN=/tmp/run-$name OUT=/tmp/arms/$name PACK=last \
        sh scripts/device-train.sh "$DATA" "" "$STEPS" "$LIMIT" ${arm#"$name"} \
        >"/tmp/arm-$name.log" 2>&1 &
done
wait
for arm in "$@"; do
    name=${arm%% *}
    echo "== $name"; tail -4 "/tmp/arm-$name.log" | cut -c1-400
done
mkdir -p "${OUT:-/tmp/out}"
tar -C /tmp -cf - arms | split -b 15M - "${OUT:-/tmp/out}/arms.tar."
ls -l "${OUT:-/tmp/out}"
