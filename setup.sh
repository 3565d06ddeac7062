#!/usr/bin/env bash
# Installs every Debian package troupe needs. Idempotent and non-interactive:
# packages already present are skipped, so a second run does nothing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git clang-format
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev libtomlplusplus-dev nlohmann-json3-dev libcli11-dev
  libspdlog-dev libfmt-dev libssl-dev libxxhash-dev
  libcaf-dev libucx-dev ucx-utils librocksdb-dev libboost-system-dev
  libprotobuf-dev protobuf-compiler prometheus-cpp-dev
  clang libclang-rt-14-dev time  # make fuzz: libFuzzer, ASan, UBSan; CPU seconds (tests/fuzz)
  python3 python3-torch python3-numpy python3-matplotlib python3-prometheus-client chromium
  fortunes fortunes-min
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
echo "setup: done"
