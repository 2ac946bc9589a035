#!/usr/bin/env bash
# Idempotent machine setup for Spyglass (Debian 12, root). Safe to run again: every step
# checks before it acts, so a set-up machine passes through in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

# Everything a fresh Debian 12 needs, tests included: bcc and the headers it compiles against,
# iproute2/procps for netns and sysctls, gcc for the ABI test and bench client, ping,
# Chromium for the browser tests, iptables/nftables for the kube-proxy bench, openssl
# for the TLS tests.
APT_PACKAGES=(python3-bpfcc bpfcc-tools libbpfcc linux-headers-amd64 iproute2 procps
              python3-venv python3-dev gcc libc6-dev make curl iputils-ping chromium
              iptables nftables openssl util-linux)

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "setup must run as root (it installs apt packages and mounts bpffs): try 'sudo make setup'" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

# bcc compiles against /lib/modules/$(uname -r)/build. The running kernel ships no headers
# package; Debian's linux-headers-amd64 works when linked there (DESIGN.md).
K=$(uname -r)
if [ ! -e "/lib/modules/$K/build/include" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$hdr" ]; then
    echo "no /usr/src/linux-headers-*-amd64 found: apt-get install linux-headers-amd64" >&2
    exit 1
  fi
  common="${hdr%-amd64}-common"
  say "linking kernel headers: /lib/modules/$K/build -> $hdr"
  mkdir -p "/lib/modules/$K"
  ln -sfn "$hdr" "/lib/modules/$K/build"
  [ -d "$common" ] && ln -sfn "$common" "/lib/modules/$K/source"
fi

if ! mountpoint -q /sys/fs/bpf; then
  say "mounting bpffs on /sys/fs/bpf"
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
fi

# The venv sits on the distribution's python so that `import bcc` (python3-bpfcc) works.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
  say "creating .venv (--system-site-packages on /usr/bin/python3)"
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
# A strict editable install: a tree of links under build/ that mypy, editors and Python all
# read as the package `spyglass` (the top-level folders map onto spyglass.* by package-dir).
# It lists files, so it is redone when pyproject.toml or the set of package files changes.
stamp=.venv/.spyglass-installed
files_now=$(find model bpf policy lab collector storage api agent cli ui -type f \
              \( -name '*.py' -o -name '*.pyi' -o -name '*.proto' -o -name '*.c' -o -name '*.h' \
                 -o -name '*.yaml' -o -name 'py.typed' \
                 -o -path 'ui/static/*' \) -not -path '*/__pycache__/*' | sort | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$files_now" ] \
   || ! .venv/bin/python -c 'import spyglass.model' 2>/dev/null; then
  say "installing spyglass (strict editable) with dev extras into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]' --config-settings editable_mode=strict
  echo "$files_now" > "$stamp"
fi
say "ready: .venv/bin/spyglass"
