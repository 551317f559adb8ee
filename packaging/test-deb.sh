#!/usr/bin/env bash
# The Debian package in a clean container of the base image (docker/base.sh): it installs with
# apt (its DPDK dependencies come from the Debian mirror), trapeze-check passes on the installed
# /etc/trapeze/gateway.toml, `trapezectl --help` runs, the unit is in place; and on the host,
# systemd-analyze verifies the unit against the package's files.
#
#   packaging/test-deb.sh [BUILD_IMAGE]
#
# The binaries come from the image's build stage (BUILD_IMAGE, default trapeze-build:latest,
# made by docker/build.sh), so nothing is compiled again.
set -euo pipefail
cd "$(dirname "$0")/.."

build_image=${1:-trapeze-build:latest}
base=${TZK_BASE:-trapeze-base:bookworm}
work=$(mktemp -d /tmp/tzk-deb.XXXXXX)
log() { printf '[test-deb] %s\n' "$*" >&2; }
cleanup() {
  docker rm -f tzk-deb-src tzk-deb-install >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

docker create --name tzk-deb-src "$build_image" >/dev/null
mkdir -p "$work/bin" "$work/deb"
for b in trapeze-gatewayd trapezectl trapeze-check; do
  docker cp "tzk-deb-src:/src/target/release/$b" "$work/bin/$b"
done
packaging/deb.sh --bin-dir "$work/bin" "$work/deb" >&2
deb=$(ls "$work"/deb/*.deb)

# The unit, checked by the host's systemd, its commands pointed at the package's own tree.
mkdir -p "$work/root" "$work/unit"
dpkg-deb -x "$deb" "$work/root"
if command -v systemd-analyze >/dev/null; then
  sed "s#/usr/bin/trapeze#$work/root/usr/bin/trapeze#g" \
    "$work/root/lib/systemd/system/trapeze-gatewayd.service" >"$work/unit/trapeze-gatewayd.service"
  systemd-analyze verify "$work/unit/trapeze-gatewayd.service"
  log "systemd-analyze verify: the unit is valid"
fi

docker run --name tzk-deb-install --rm -v "$work/deb:/deb:ro" "$base" bash -euc '
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /deb/*.deb >/dev/null
  trapeze-check --config /etc/trapeze/gateway.toml | head -n1
  trapezectl --help | head -n1
  test -f /lib/systemd/system/trapeze-gatewayd.service
  dpkg -s trapeze | grep -E "^(Version|Status):"
  echo "trapeze-gatewayd: $(trapeze-gatewayd --help | head -n1)"
'
log "PASS: $(basename "$deb") installs in a clean $base container; trapeze-check and trapezectl --help run"
