//! Builds the load generator with or without DPDK, following the FFI crate: its build script
//! reports whether it linked DPDK (`cargo:available`, seen here as `DEP_DPDK_AVAILABLE`), as the
//! daemon's does.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tz_no_dpdk)");
    println!("cargo:rerun-if-env-changed=DEP_DPDK_AVAILABLE");
    if std::env::var("DEP_DPDK_AVAILABLE").as_deref() != Ok("1") {
        println!("cargo:rustc-cfg=tz_no_dpdk");
    }
}
