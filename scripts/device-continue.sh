#!/bin/sh
# A second call on a still-warm GPU machine after scripts/device-plan.sh: its stage-2
# runs (/tmp/run-NAME) and the shards generated there (/tmp/gen/train) are still in the
# machine's /tmp, so each named arm trains on for LIMIT more seconds from where it
# stopped. Nothing needs carrying. The continued arms come back as arms.tar.* in $OUT
# (cat arms.tar.* | tar x; each arms/NAMEc/last/part0+part1), as device-arms.sh packs them.
# Run there as: OUT=$OUT sh scripts/device-continue.sh LIMIT "NAME FLAGS..." ...
# with the call's timeout_s = LIMIT + 85 or more (loading and packing took 52 s for
# three arms, 2026-11-28). FLAGS are the arm's own training flags beyond the shared
# ones (the floor weight, for instance); the model's shape comes from its checkpoint.
# The H200 session of 2026-11-28 ran this by hand with LIMIT 150: 700-750 more steps
# per arm, and each continued arm screened above its stage-2 self.
set -eu
LIMIT=$1; shift
[ -d /tmp/gen/train ] || { echo "no /tmp/gen/train: the machine is not the plan's (it went cold)" >&2; exit 1; }
SHARED="--lr 5e-4 --warmup 30 --onset-weight 10"
given=$#
for arm in "$@"; do  # each continued arm is appended; the given ones are shifted off
    name=${arm%% *}
    [ -f "/tmp/run-$name/model.safetensors" ] || { echo "no run /tmp/run-$name" >&2; exit 1; }
    set -- "$@" "${name}c --init /tmp/run-$name $SHARED${arm#"$name"}"
done
shift "$given"
echo "$(find /tmp/gen/train -name 'shard-*.npz' | wc -l) shards in /tmp/gen/train"
OUT=${OUT:-/tmp/out} sh scripts/device-arms.sh /tmp/gen/train 9000 "$LIMIT" "$@"
