#!/usr/bin/env bash
# Builds the Debian package of trapeze with dpkg-deb (no download, no cargo-deb): the three
# release binaries, the systemd unit, /etc/trapeze/gateway.toml (the example configuration, a
# conffile), the docs.
#
#   packaging/deb.sh [--bin-dir DIR] [OUT_DIR]     (OUT_DIR defaults to target/deb)
#
# Without --bin-dir the binaries are built (cargo build --release). Install it with
#   apt-get install ./target/deb/trapeze_<version>_amd64.deb
# which also installs the DPDK runtime libraries and PMDs it depends on.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=
if [ "${1:-}" = --bin-dir ]; then bin_dir=$2; shift 2; fi
out=${1:-target/deb}
if [ -z "$bin_dir" ]; then
  CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release --locked -q -p trapeze-gatewayd -p trapeze-control --bins
  bin_dir=target/release
fi
version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
arch=$(dpkg --print-architecture)
root=$(mktemp -d /tmp/tzk-deb.XXXXXX)
trap 'rm -rf "$root"' EXIT

install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/trapeze" "$root/lib/systemd/system" \
  "$root/usr/share/doc/trapeze"
for b in trapeze-gatewayd trapezectl trapeze-check; do
  install -m 0755 "$bin_dir/$b" "$root/usr/bin/$b"
  strip --strip-all "$root/usr/bin/$b"
done
install -m 0644 configs/example.toml "$root/etc/trapeze/gateway.toml"
install -m 0644 packaging/trapeze-gatewayd.service "$root/lib/systemd/system/trapeze-gatewayd.service"
install -m 0644 README.md docs/API.md "$root/usr/share/doc/trapeze/"
install -m 0644 configs/example.toml "$root/usr/share/doc/trapeze/example.toml"

# Depends: the Debian packages of the libraries the binaries link (by name, from dpkg -S) and
# of the PMDs the gateway drives (DPDK loads its plugin directory at start).
libs=$(ldd "$root"/usr/bin/* | awk '/=> \// {print $3}' | sort -u)
deps=$(for l in $libs; do dpkg -S "$(readlink -f "$l")" 2>/dev/null | cut -d: -f1; done | sort -u)
dpdk=$(dpkg-query -W -f='${Version}' librte-eal23 | cut -d- -f1)
pmds="librte-bus-vdev23 librte-mempool-ring23 librte-net-af-packet23 librte-net-af-xdp23 librte-net-memif23 librte-net-null23 librte-net-tap23"
depends=$(for p in $deps $pmds; do
  case "$p" in librte-*) echo "$p (>= $dpdk)" ;; libc6 | libgcc-s1) echo "$p" ;; *) echo "$p" ;; esac
done | sort -u | paste -sd, - | sed 's/,/, /g')

cat >"$root/DEBIAN/control" <<CONTROL
Package: trapeze
Version: $version
Architecture: $arch
Maintainer: trapeze developers <trapeze@example.invalid>
Section: net
Priority: optional
Depends: $depends
Installed-Size: $(du -sk "$root" | cut -f1)
Description: MPTCP-aware anycast/ECMP gateway on DPDK
 trapeze-gatewayd balances TCP and Multipath TCP connections over backends with
 Maglev, routes MPTCP joins to their connection's server, and is driven by a
 REST API (trapezectl) and a TOML configuration (trapeze-check validates it).
 A systemd unit is included; see /usr/share/doc/trapeze/README.md.
CONTROL
echo /etc/trapeze/gateway.toml >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
POSTINST
chmod 0755 "$root/DEBIAN/postinst"

mkdir -p "$out"
deb=$out/trapeze_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb ($(du -k "$deb" | cut -f1) KiB): Depends: $depends"
