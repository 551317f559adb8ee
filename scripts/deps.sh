#!/usr/bin/env bash
# The one place that knows which Debian packages trapeze needs. scripts/test.sh, scripts/demo.sh
# and docker/Dockerfile all call it, so a fresh machine and the image's build stage install the
# same things.
#
#   scripts/deps.sh [--print] GROUP...
#
# Groups:
#   rust    a Rust toolchain (cargo, rustc, rustfmt, clippy) from Debian's rust-web packages
#           (1.88 or newer: the workspace's rust-version), installed only when no `cargo` is on the PATH (a rustup toolchain
#           counts); with ca-certificates so cargo reaches crates.io
#   core    the forwarding core alone (no DPDK): a C toolchain and pkg-config
#   build   compile the workspace: C toolchain, pkg-config, DPDK 22.11 (headers, PMDs, testpmd),
#           libclang for bindgen
#   e2e     the test bed: namespaces and veths, captures, nftables, BIRD 2 and ExaBGP, the
#           Python the harness runs on, matplotlib for the anycast plot
#   checks  the test command's other tools: shellcheck, valgrind (instruction budgets),
#           mmdebstrap (the container base), dpkg-dev
#   image   what the container image's runtime stage copies from the build stage (tini)
#   test    what scripts/test.sh installs as root (rust build e2e checks python); the image's
#           build stage installs the same group, so it is the test command's install step on a
#           clean Debian 12
#   python  a virtualenv at target/pyenv with the PyPI tools the test command runs (ruff,
#           schemathesis); needs the network once, never at test time
#
# Every package is checked by name with dpkg-query, never by looking for files it would install:
# a look-alike file (libclang-cpp14's libclang-cpp.so.14 matching libclang*.so*) once made the
# check pass on a machine that could not build.
set -euo pipefail
cd "$(dirname "$0")/.."

print=0
if [ "${1:-}" = --print ]; then print=1; shift; fi

packages_of() {
  case "$1" in
    rust)
      if command -v cargo >/dev/null; then echo ""; else
        echo ca-certificates rustc-web cargo-web rustfmt-web rust-web-clippy
      fi
      ;;
    core) echo build-essential pkg-config ;;
    build) echo build-essential pkg-config libdpdk-dev dpdk-dev libclang-dev ;;
    e2e) echo iproute2 ethtool tcpdump nftables util-linux procps bird2 exabgp python3 python3-venv python3-matplotlib ;;
    checks) echo shellcheck valgrind mmdebstrap dpkg-dev ;;
    image) echo tini ;;
    python) echo python3 python3-venv ;;
    *) echo "deps.sh: unknown group '$1' (rust, core, build, e2e, checks, image, python, test)" >&2; return 1 ;;
  esac
}

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

[ $# -gt 0 ] || set -- build
# The group `test` is the others that scripts/test.sh installs as root.
groups=()
for g in "$@"; do
  if [ "$g" = test ]; then groups+=(rust build e2e checks python); else groups+=("$g"); fi
done
set -- "${groups[@]}"
wanted=()
for group in "$@"; do
  read -r -a pkgs <<<"$(packages_of "$group")"
  wanted+=("${pkgs[@]+"${pkgs[@]}"}")
done

if [ "$print" = 1 ]; then
  printf '%s\n' "${wanted[@]+"${wanted[@]}"}" | sort -u
  exit 0
fi

missing=()
for p in "${wanted[@]+"${wanted[@]}"}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  for p in "${missing[@]}"; do
    installed "$p" || { echo "deps.sh: $p did not install" >&2; exit 1; }
  done
fi

for group in "$@"; do
  if [ "$group" = python ]; then
    # The PyPI tools, pinned, in a virtualenv of the project's own (the system Python stays
    # untouched). Re-created when the pins change.
    venv=target/pyenv
    pins="ruff==0.17.5 schemathesis==4.32.5"
    if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
      rm -rf "$venv"
      /usr/bin/python3 -m venv "$venv"
      # shellcheck disable=SC2086  # the pins are words
      "$venv/bin/pip" install -q --disable-pip-version-check $pins
      echo "$pins" >"$venv/.pins"
    fi
  fi
done
