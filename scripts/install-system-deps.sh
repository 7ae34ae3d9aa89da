#!/bin/sh
# Installs the Debian packages microturn needs, only when they are missing.
#   espeak-ng (+ libespeak-ng1): speech synthesis with word timings, for data
#   flite: a second synthesis engine with other voices, for data
#   festival + festvox-kallpc16k + festvox-kdlpc16k: a third engine, held out of training
#     (the unseen_engine split); each voice package is checked on its own
#   chromium: the browser client's end-to-end tests (driven by Playwright, never downloaded)
set -eu
missing=""
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
command -v flite >/dev/null 2>&1 || missing="$missing flite"
command -v festival >/dev/null 2>&1 || missing="$missing festival"
[ -d /usr/share/festival/voices/english/kal_diphone ] || missing="$missing festvox-kallpc16k"
[ -d /usr/share/festival/voices/english/ked_diphone ] || missing="$missing festvox-kdlpc16k"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
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
