#!/usr/bin/env bash
# Installs the Debian 12 packages that aligner's build, tests, benchmarks and optional backends need.
# Usage: scripts/install-deps.sh [--minimal]   (--minimal skips the optional FAISS/hnswlib backends)
set -euo pipefail
pkgs=(cmake g++ make libeigen3-dev libxsimd-dev xtl-dev catch2 libbenchmark-dev python3-dev python3-venv)
if [[ "${1:-}" != "--minimal" ]]; then
  pkgs+=(libfaiss-dev libhnswlib-dev clang libclang-rt-14-dev chromium zlib1g-dev)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
