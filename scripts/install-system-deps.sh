#!/bin/sh
# Installs the Debian packages microturn needs, only when they are missing.
#   espeak-ng (+ libespeak-ng1): speech synthesis with word timings, for data
#   flite: a second synthesis engine with other voices, for data
set -eu
missing=""
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
command -v flite >/dev/null 2>&1 || missing="$missing flite"
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "error: need root or sudo to install:$missing (apt-get install$missing)" >&2
        exit 1
    fi
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
