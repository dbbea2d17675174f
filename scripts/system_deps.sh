#!/usr/bin/env bash
# Debian packages that MuJoCo needs to render off-screen on the CPU (EGL + Mesa).
# Installed automatically when running as root; otherwise we say exactly what to install.
set -euo pipefail
pkgs=(libegl1 libgl1-mesa-dri)
missing=()
if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "system_deps: not a Debian-based system; make sure EGL + Mesa (libEGL, DRI drivers) are installed." >&2
  exit 0
fi
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "system_deps: installing ${missing[*]} (needed for MuJoCo off-screen rendering)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "system_deps: missing Debian packages: ${missing[*]}" >&2
  echo "system_deps: install them with:  sudo apt-get install -y ${missing[*]}" >&2
  echo "system_deps: (needed only for simulation rendering; data/model tests still run)" >&2
fi
