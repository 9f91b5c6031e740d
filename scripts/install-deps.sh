#!/usr/bin/env bash
# Installs every Debian package that building, testing and the demo need. Idempotent: quiet and quick
# when everything is present. Needs root (or sudo). The CUDA toolkit is optional and not installed here:
# when nvcc is on PATH (or in /usr/local/cuda/bin) the CUDA backend is built too.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev libsentencepiece-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  libyaml-cpp-dev libcpp-httplib-dev libpcre2-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  curl ca-certificates jq unzip
  fortune-mod fortunes
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
