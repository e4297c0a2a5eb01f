#!/usr/bin/env bash
# Install Debian's espeak-ng (speech of the affect corpus, facelab.affect.speech) when it is missing (needs root or
# sudo; nothing else is downloaded).
set -euo pipefail
if command -v espeak-ng >/dev/null 2>&1; then exit 0; fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "Installing Debian's espeak-ng for the affect corpus ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng >/dev/null
command -v espeak-ng >/dev/null 2>&1 || { echo "espeak-ng could not be installed: apt-get install espeak-ng"; exit 1; }
