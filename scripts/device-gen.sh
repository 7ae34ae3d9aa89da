#!/bin/sh
# Run on a lent GPU machine (carry .devkit, made here by scripts/device-kit.sh): unpacks
# the synthesizers and wheels, checks that espeak-ng and flite speak and that a whole
# training episode can be made, then starts `microturn data` in the background (niced)
# and returns. A training run started next with `--grow-data DIR/train` takes the shards
# in as they are written.
#   sh scripts/device-gen.sh DIR FIRST_SEED SCALE [WORKERS]
# (FIRST_SEED: a range no other data set used, e.g. 5000000; SCALE as `microturn data
# --scale`: 1.0 = 1,540 episodes, ~100 a shard; WORKERS: default all cores but two.)
# The log is /tmp/gen.log, the generator's pid /tmp/gen.pid. Rehearse here with
# KIT_LIBS=all (use every library in the kit, not only those the machine lacks) and
# PYTHON=.venv/bin/python.
set -eu
DIR=$1; SEED=$2; SCALE=$3
WORKERS=${4:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
PYTHON=${PYTHON:-python3}
KIT=/tmp/kit
rm -rf "$KIT" && mkdir -p "$KIT"
tar -xJf .devkit/sys.tar.xz -C "$KIT"
# The machine's own libraries win: only the ones it lacks are taken from the kit (a
# Debian library shadowing a newer Ubuntu one could break what else the process loads).
if [ "${KIT_LIBS:-missing}" != all ]; then
    for lib in "$KIT"/sys/lib/*; do
        if /sbin/ldconfig -p | grep -q "^[[:space:]]$(basename "$lib") "; then rm "$lib"; fi
    done
    # libpulse finds its private libpulsecommon by its own path, not the cache: keep the
    # kit's copy only beside the kit's libpulse
    [ -e "$KIT/sys/lib/libpulse.so.0" ] || rm -f "$KIT"/sys/lib/libpulsecommon-*
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$KIT/site" .devkit/whl/*.whl
export PATH="$KIT/sys/bin:$PATH" ESPEAK_DATA_PATH="$KIT/sys" MICROTURN_CACHE="$KIT/cache"
export LD_LIBRARY_PATH="$KIT/sys/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$PWD:$KIT/site${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
echo "kit: $(ls "$KIT/sys/lib" | wc -l) libraries from the kit, $(which flite)"
# Both engines speak, and one whole training episode is made as the workers will make it
# (librosa, numba and the dMel codec load only then).
"$PYTHON" - <<'PY'
from microturn.stream.layout import Layout
from microturn.train.data import make_example
from microturn.voices import synthesize

for voice in ("espeak-ng:en-us", "flite:slt"):
    speech = synthesize("count down from ten", voice)
    assert len(speech.audio) > 8000 and speech.words, voice
    print(f"{voice}: {len(speech.audio) / 16000:.2f} s, {len(speech.words)} words")
turns = make_example("time_awareness", 4_999_999, Layout.preset("tiny"))
print(f"one episode: {turns.n_turns} micro-turns")
PY
# niced: the trainers' own CPU work (batches, loading new shards) goes first
nohup nice -n 15 "$PYTHON" -m microturn.cli data --out "$DIR" --scale "$SCALE" \
    --workers "$WORKERS" --first-seed "$SEED" --eval-per-scenario 0 >/tmp/gen.log 2>&1 &
echo $! >/tmp/gen.pid
echo "generating $DIR/train with $WORKERS workers (pid $!); log /tmp/gen.log"
