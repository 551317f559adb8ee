#!/usr/bin/env bash
# Run in the image's build stage: copies into OUT (default /out) the files the runtime stage
# carries and nothing else: the three stripped binaries, tini, the DPDK PMDs the gateway uses
# (plus the common NIC PMDs when NIC_PMDS=1), and the shared libraries all of them need (their
# ldd closure), at their own paths, so the runtime stage is `COPY --from=build /out/ /`.
#
#   docker/collect.sh BIN_DIR [OUT]
set -euo pipefail
bin_dir=$1
out=${2:-/out}
nic=${NIC_PMDS:-1}
pmd_dir=$(dirname "$(find /usr/lib -path '*/dpdk/pmds-*/librte_bus_vdev.so.*' -type f | head -n1)")

# The PMDs: DPDK loads every .so of its plugin directory at start, so that directory holds
# exactly these. bus_vdev and mempool_ring are what every virtual device needs.
pmds=(bus_vdev mempool_ring mempool_stack net_af_packet net_af_xdp net_memif net_null net_tap net_ring)
if [ "$nic" = 1 ]; then
  # Common NICs: Intel (e1000/igb, ixgbe, i40e, ice, iavf), virtio, VMware vmxnet3, on PCI.
  pmds+=(bus_pci common_iavf net_e1000 net_ixgbe net_i40e net_ice net_iavf net_virtio net_vmxnet3)
fi

mkdir -p "$out/usr/bin" "$out$pmd_dir"
for b in trapeze-gatewayd trapezectl trapeze-check; do
  install -m 0755 "$bin_dir/$b" "$out/usr/bin/$b"
  strip --strip-all "$out/usr/bin/$b"
done
install -m 0755 /usr/bin/tini-static "$out/usr/bin/tini"

objects=("$out/usr/bin/trapeze-gatewayd" "$out/usr/bin/trapezectl" "$out/usr/bin/trapeze-check")
for p in "${pmds[@]}"; do
  f=$(readlink -f "$pmd_dir/librte_$p.so")
  [ -f "$f" ] || { echo "collect: no PMD librte_$p in $pmd_dir" >&2; exit 1; }
  # DPDK loads the directory's files named *.so or *.so.<ABI version> (librte_x.so.23.0).
  cp "$f" "$out$pmd_dir/"
  objects+=("$f")
done

# The shared libraries of all of them (libc and libgcc_s are in the base already), at their
# real paths (on merged /usr: /usr/lib/...) with the soname links ldd names beside them.
ldd "${objects[@]}" 2>/dev/null | awk '/=> \// {print $3}' | sort -u |
  while IFS= read -r lib; do
    real=$(readlink -f "$lib")
    case "$(basename "$real")" in libc.so.* | libm.so.* | libgcc_s.so.* | ld-linux*) continue ;; esac
    dir=$(dirname "$real")
    mkdir -p "$out$dir"
    [ -e "$out$real" ] || cp "$real" "$out$real"
    # The name ldd found, in its directory with /lib resolved to /usr/lib (merged /usr): e.g.
    # Debian's /usr/lib/x86_64-linux-gnu/librte_bus_vdev.so.23 -> dpdk/pmds-23.0/....so.23.0.
    link=$(readlink -f "$(dirname "$lib")")/$(basename "$lib")
    mkdir -p "$out$(dirname "$link")"
    [ "$link" = "$real" ] || [ -e "$out$link" ] || [ -L "$out$link" ] || ln -s "$real" "$out$link"
  done
# Every soname the objects need must be in OUT or in the base (libc, libm, libgcc_s, ld.so).
missing=$(for o in "${objects[@]}"; do objdump -p "$o" | awk '/NEEDED/ {print $2}'; done | sort -u |
  while IFS= read -r so; do
    case "$so" in libc.so.* | libm.so.* | libgcc_s.so.* | ld-linux*) continue ;; esac
    [ -n "$(find "$out" -name "$so" -print -quit)" ] || echo "$so"
  done)
if [ -n "$missing" ]; then
  echo "collect: not carried: $missing" >&2
  exit 1
fi
if ldd "${objects[@]}" | grep -q 'not found'; then
  ldd "${objects[@]}" | grep 'not found' >&2
  exit 1
fi
echo "collect: $(find "$out" -type f | wc -l) files, $(du -sh "$out" | cut -f1)"
