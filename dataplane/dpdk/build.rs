//! Builds the DPDK bindings: `pkg-config` finds DPDK 22.11, `cc` compiles the C shim around
//! DPDK's `static inline` fast-path functions, and `bindgen` generates declarations for the
//! small allow-listed part of the DPDK API this crate uses (plus the shim's own prototypes).

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// DPDK's ABI 23 is the 22.11 LTS; the shim and the wrappers are written against it.
const DPDK_MIN_VERSION: &str = "22.11";

/// Functions bindgen declares (anchored regexes). Explicit, so the bindings stay small: the
/// `rte_eth_*` family alone has hundreds of functions we do not use.
const FUNCTIONS: &[&str] = &[
    "tz_.*",
    "rte_eal_init",
    "rte_eal_cleanup",
    "rte_strerror",
    "rte_socket_id",
    "rte_lcore_count",
    "rte_thread_register",
    "rte_thread_unregister",
    "rte_eth_dev_count_avail",
    "rte_eth_find_next",
    "rte_eth_dev_is_valid_port",
    "rte_eth_dev_get_port_by_name",
    "rte_eth_dev_get_name_by_port",
    "rte_eth_dev_info_get",
    "rte_eth_dev_socket_id",
    "rte_eth_dev_configure",
    "rte_eth_dev_adjust_nb_rx_tx_desc",
    "rte_eth_rx_queue_setup",
    "rte_eth_tx_queue_setup",
    "rte_eth_dev_start",
    "rte_eth_dev_stop",
    "rte_eth_dev_close",
    "rte_eth_promiscuous_(enable|disable|get)",
    "rte_eth_dev_set_mtu",
    "rte_eth_dev_get_mtu",
    "rte_eth_macaddr_get",
    "rte_eth_link_get_nowait",
    "rte_eth_stats_get",
    "rte_eth_stats_reset",
    "rte_pktmbuf_pool_create",
    "rte_mempool_avail_count",
    "rte_mempool_in_use_count",
];

/// Types bindgen generates (their dependencies come along).
const TYPES: &[&str] = &[
    "rte_mbuf",
    "rte_eth_conf",
    "rte_eth_dev_info",
    "rte_eth_stats",
    "rte_eth_link",
    "rte_ether_addr",
    "rte_eth_rxconf",
    "rte_eth_txconf",
    "rte_eth_rx_mq_mode",
    "rte_eth_tx_mq_mode",
];

/// Constants (macros and enum values) bindgen evaluates.
const VARS: &[&str] = &[
    "RTE_ETH_RX_OFFLOAD_(IPV4|UDP|TCP)_CKSUM",
    "RTE_ETH_RX_OFFLOAD_RSS_HASH",
    "RTE_ETH_TX_OFFLOAD_(IPV4|UDP|TCP)_CKSUM",
    "RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE",
    "RTE_ETH_RSS_(IP|TCP|UDP)",
    "RTE_ETH_MQ_RX_(NONE|RSS)",
    "RTE_ETH_MQ_TX_NONE",
    "RTE_MBUF_F_RX_(IP|L4)_CKSUM_(MASK|UNKNOWN|BAD|GOOD|NONE)",
    "RTE_MBUF_F_RX_RSS_HASH",
    "RTE_MBUF_F_TX_(IPV4|IPV6|IP_CKSUM|TCP_CKSUM|UDP_CKSUM)",
    "RTE_MAX_ETHPORTS",
    "RTE_MAX_LCORE",
    "RTE_PKTMBUF_HEADROOM",
    "RTE_MBUF_DEFAULT_BUF_SIZE",
    "RTE_ETH_NAME_MAX_LEN",
    "RTE_MEMPOOL_NAMESIZE",
    "RTE_ETH_LINK_(UP|DOWN|FULL_DUPLEX|AUTONEG)",
    "RTE_ETH_SPEED_NUM_(NONE|UNKNOWN)",
    "SOCKET_ID_ANY",
    "LCORE_ID_ANY",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/tz_shim.h");
    println!("cargo:rerun-if-changed=csrc/tz_shim.c");
    println!("cargo:rerun-if-env-changed=TRAPEZE_NO_DPDK");
    println!("cargo::rustc-check-cfg=cfg(tz_no_dpdk)");

    // Without DPDK (or with TRAPEZE_NO_DPDK=1) the crate builds empty: `AVAILABLE` is false and
    // nothing links DPDK. The forwarding core never needs DPDK, and `cargo test --workspace`
    // passes on such a machine; the daemon reports that it was built without DPDK.
    let forced_off = env::var("TRAPEZE_NO_DPDK").is_ok_and(|v| v == "1");
    let found = !forced_off
        && pkg_config::Config::new()
            .atleast_version(DPDK_MIN_VERSION)
            .cargo_metadata(false)
            .probe("libdpdk")
            .is_ok();
    if !found {
        println!(
            "cargo:warning=trapeze-dpdk: building without DPDK ({}); \
             on Debian 12: apt-get install libdpdk-dev dpdk-dev libclang-dev pkg-config",
            if forced_off {
                "TRAPEZE_NO_DPDK=1"
            } else {
                "libdpdk >= 22.11 not found by pkg-config"
            }
        );
        println!("cargo:rustc-cfg=tz_no_dpdk");
        // Seen by dependents' build scripts as DEP_DPDK_AVAILABLE.
        println!("cargo:available=0");
        return;
    }

    // Link flags: exactly the libraries pkg-config lists (DPDK's --libs, 54 `-lrte_*` on Debian
    // 12). Nothing is hard-coded: a hard-coded list is what tied capsule to DPDK 19.11.
    let dpdk = pkg_config::Config::new()
        .atleast_version(DPDK_MIN_VERSION)
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!(
                "DPDK >= {DPDK_MIN_VERSION} not found by pkg-config ({e}); \
                 on Debian 12: apt-get install libdpdk-dev dpdk-dev libclang-dev pkg-config"
            )
        });
    println!("cargo:version={}", dpdk.version);
    println!("cargo:available=1");

    // Compile flags verbatim (`-include rte_config.h`, `-march=corei7`, include dirs): the
    // pkg-config crate's Library keeps only include paths and defines, and DPDK's headers need
    // `rte_config.h` forced in and the same baseline ISA as the libraries were built for.
    let cflags = pkg_config_cflags();

    let shim_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("csrc");
    let mut build = cc::Build::new();
    build
        .file(shim_dir.join("tz_shim.c"))
        .include(&shim_dir)
        .opt_level(3)
        .warnings(true)
        .extra_warnings(true);
    for flag in &cflags {
        build.flag(flag);
    }
    build.compile("tz_shim");

    let mut builder = bindgen::Builder::default()
        .header(shim_dir.join("tz_shim.h").to_string_lossy())
        .clang_args(&cflags)
        .clang_arg(format!("-I{}", shim_dir.display()))
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .use_core()
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(false)
        .prepend_enum_name(false)
        .generate_comments(false)
        .clang_macro_fallback()
        .clang_macro_fallback_build_dir(PathBuf::from(env::var("OUT_DIR").unwrap()))
        .allowlist_recursively(true)
        // Reached through rte_eth_dev_info / rte_mbuf, never looked into from Rust.
        .opaque_type("rte_device")
        .opaque_type("rte_mempool")
        .opaque_type("rte_eth_dev_portconf")
        .opaque_type("rte_eth_switch_info")
        .opaque_type("rte_mbuf_ext_shared_info");
    for f in FUNCTIONS {
        builder = builder.allowlist_function(format!("^{f}$"));
    }
    for t in TYPES {
        builder = builder.allowlist_type(format!("^{t}$"));
    }
    for v in VARS {
        builder = builder.allowlist_var(format!("^{v}$"));
    }
    let bindings = builder
        .generate()
        .expect("bindgen failed on csrc/tz_shim.h (is libclang-dev installed?)");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings
        .write_to_file(&out)
        .expect("cannot write bindings.rs");
}

/// `pkg-config --cflags libdpdk`, split on whitespace (DPDK's flags contain no quoted spaces).
fn pkg_config_cflags() -> Vec<String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_owned());
    let out = Command::new(&pkg_config)
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {pkg_config}: {e}"));
    assert!(
        out.status.success(),
        "{pkg_config} --cflags libdpdk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("pkg-config printed non-UTF-8 flags")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
