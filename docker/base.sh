#!/usr/bin/env bash
# Builds the container base image offline from Debian's mirror (no registry): a minbase Debian 12
# (bookworm, bookworm-updates, bookworm-security) made by mmdebstrap, or by debootstrap where
# mmdebstrap is missing, then `docker import`ed.
#
#   docker/base.sh [--force] [TAG]      (TAG defaults to trapeze-base:bookworm)
#
# On a machine with a registry this script is not needed: the Dockerfile's default BASE
# (debian:bookworm-slim) is pulled instead.
set -euo pipefail
cd "$(dirname "$0")/.."

force=0
if [ "${1:-}" = --force ]; then force=1; shift; fi
tag=${1:-trapeze-base:bookworm}
mirror=${TZK_MIRROR:-http://deb.debian.org/debian}
security=${TZK_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base: $tag already present (--force rebuilds it)"
  exit 0
fi

work=$(mktemp -d /tmp/tzk-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
tarball=$work/rootfs.tar
start=$SECONDS

if command -v mmdebstrap >/dev/null; then
  # force-unsafe-io: no fsync per unpacked file (the tarball is written once at the end); it
  # halves the time. The apt lists are dropped so the image carries no stale indices.
  # No manuals, translations or documentation other than the copyright files (the dpkg
  # excludes stay in the image, so packages installed later leave them out too), as in
  # debian:bookworm-slim.
  # The merged-usr hook lays out merged /usr itself; without it the usrmerge package (and perl,
  # 70 MB) is installed to do it.
  # shellcheck disable=SC2016  # "$1" is the hook's argument, expanded by mmdebstrap's shell
  mmdebstrap --variant=minbase --mode=root --format=tar \
    --dpkgopt=force-unsafe-io \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$tarball" \
    "deb $mirror bookworm main" \
    "deb $mirror bookworm-updates main" \
    "deb $security bookworm-security main"
elif command -v debootstrap >/dev/null; then
  root=$work/root
  debootstrap --variant=minbase bookworm "$root" "$mirror"
  cat >"$root/etc/apt/sources.list" <<LIST
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
LIST
  chroot "$root" apt-get update -qq
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$tarball" .
else
  echo "base: neither mmdebstrap nor debootstrap is installed (scripts/deps.sh checks installs mmdebstrap)" >&2
  exit 1
fi

docker import \
  --change 'CMD ["/bin/bash"]' \
  --change 'ENV LANG=C.UTF-8' \
  --message "trapeze base: Debian 12 minbase from $mirror" \
  "$tarball" "$tag" >/dev/null
echo "base: $tag built in $((SECONDS - start)) s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1/1e6}')"
