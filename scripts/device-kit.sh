#!/bin/sh
# Packs what `microturn data` needs on a lent GPU machine, which has PyTorch but no speech
# synthesizers and no librosa: then the machine's idle cores make fresh episodes while
# its GPU trains (scripts/device-gen.sh), instead of every episode being carried in
# 64 MiB calls. Run here, after `make setup`: sh scripts/device-kit.sh
# Writes .devkit/ (git-ignored; name it in the call's carry, ~25 MB):
#   sys.tar.xz  this machine's espeak-ng library and flite with every shared library they
#               load (ldd) except the C library's own, and espeak-ng-data;
#   whl/        the Python packages the data path imports that the GPU image lacks, as
#               CPython 3.12 wheels, at the versions installed here (what the tests ran);
#               PYVER=3.11 packs them for this machine's Python, to rehearse device-gen.sh.
set -eu
KIT=.devkit
rm -rf "$KIT"
mkdir -p "$KIT/sys/lib" "$KIT/sys/bin" "$KIT/whl"
espeak=$(/sbin/ldconfig -p | awk '/libespeak-ng\.so\.1 /{print $NF; exit}')
flite=$(command -v flite)
[ -n "$espeak" ] && [ -n "$flite" ] || { echo "needs espeak-ng and flite: make setup" >&2; exit 1; }
cp -L "$espeak" "$KIT/sys/lib/"
cp -L "$flite" "$KIT/sys/bin/"
# Each library by its soname, resolved through symlinks; the GPU machine's glibc is newer
# than this one's (it runs binaries built here), so its own C library stays in charge.
ldd "$espeak" "$flite" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
    while read -r name path; do
        case $name in
            libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*) ;;
            *) cp -L "$path" "$KIT/sys/lib/$name" ;;
        esac
    done
cp -r /usr/lib/x86_64-linux-gnu/espeak-ng-data "$KIT/sys/espeak-ng-data"
# every English voice reads en_dict; the other languages' dictionaries are 3.5 MB packed
find "$KIT/sys/espeak-ng-data" -maxdepth 1 -name '*_dict' ! -name en_dict -delete
tar -cJf "$KIT/sys.tar.xz" -C "$KIT" sys
rm -rf "$KIT/sys"
# librosa and what it needs beyond the image's packages (KINDS.md lists numpy, scipy,
# numba, scikit-learn, joblib, msgpack, lazy-loader, requests, packaging there).
PKGS="librosa soundfile soxr audioread pooch platformdirs decorator cffi pycparser"
for pkg in $PKGS; do
    version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$pkg'))")
    .venv/bin/pip download --quiet --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$KIT/whl" "$pkg==$version"
done
du -sh "$KIT/sys.tar.xz" "$KIT/whl"
