#!/usr/bin/env bash
# One command from nothing to the gateway image, pulling nothing: the base image (docker/base.sh,
# skipped when present), then docker/Dockerfile's build and runtime stages with BASE set to it.
#
#   docker/build.sh [--no-nic-pmds] [TAG]     (TAG defaults to trapeze:latest)
#
# Prints the time of each part and the images' sizes. Proxy variables of the environment
# (http_proxy, https_proxy, no_proxy, upper case too) are passed to the build, and the host's
# extra CA certificates (/usr/local/share/ca-certificates/*.crt, e.g. a TLS-intercepting proxy's)
# are copied into the build context (docker/extra-ca/, git-ignored) so apt and cargo trust them.
# The crates of Cargo.lock are vendored on the host first (docker/vendor/, git-ignored; from the
# host's cargo cache where it has them, with retries), so that the image's cargo build is offline:
# a slow crates.io inside `docker build`, which has no retry of its own, once failed the build.
set -euo pipefail
cd "$(dirname "$0")/.."

nic=1
if [ "${1:-}" = --no-nic-pmds ]; then nic=0; shift; fi
tag=${1:-trapeze:latest}
base=${TZK_BASE:-trapeze-base:bookworm}

t0=$SECONDS
docker/base.sh "$base"
t_base=$((SECONDS - t0))

rm -rf docker/extra-ca
mkdir -p docker/extra-ca
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$crt" ] && cp "$crt" docker/extra-ca/
done

# The crates, vendored: the build stage copies docker/vendor.toml to .cargo/config.toml and builds
# --offline. Re-vendored each time (a few seconds from the cache) so it always matches Cargo.lock.
t_v=$SECONDS
mkdir -p target
rm -rf docker/vendor docker/vendor.toml docker/vendor.toml.tmp
# (Not -q: that also drops the source replacement cargo vendor prints on stdout.)
if CARGO_NET_RETRY=${CARGO_NET_RETRY:-10} cargo vendor --locked --versioned-dirs docker/vendor \
  >docker/vendor.toml.tmp 2>target/cargo-vendor.log &&
  grep -q '^replace-with' docker/vendor.toml.tmp; then
  mv docker/vendor.toml.tmp docker/vendor.toml
  echo "crates: vendored $(find docker/vendor -mindepth 1 -maxdepth 1 | wc -l)" \
    "($(du -sh docker/vendor | cut -f1)) in $((SECONDS - t_v)) s"
else
  rm -rf docker/vendor docker/vendor.toml.tmp
  tail -n 5 target/cargo-vendor.log >&2
  echo "crates: cargo vendor failed; the build stage fetches them from crates.io itself" >&2
fi

args=(--build-arg "BASE=$base" --build-arg "NIC_PMDS=$nic")
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  if [ -n "${!v:-}" ]; then args+=(--build-arg "$v=${!v}"); fi
done

t1=$SECONDS
# --pull=false: BASE is a local image; nothing is fetched from a registry.
docker build --pull=false -f docker/Dockerfile --target build -t "${tag%%:*}-build:${tag#*:}" "${args[@]}" .
t_build=$((SECONDS - t1))
t2=$SECONDS
docker build --pull=false -f docker/Dockerfile -t "$tag" "${args[@]}" .
t_runtime=$((SECONDS - t2))

size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1/1e6}'; }
echo "images: base $base $(size "$base") (${t_base} s), build stage $(size "${tag%%:*}-build:${tag#*:}") (${t_build} s), runtime $tag $(size "$tag") (${t_runtime} s); total $((SECONDS - t0)) s"
