//! Without `--no-huge` and without usable hugepages, EAL init fails with an error that says so
//! (here forced, whatever the machine has, by pointing `--huge-dir` at an empty directory).

#![cfg(not(tz_no_dpdk))]

// Every EAL of these tests passes --no-pci (and its own --file-prefix): `common::Prefix::args`.
mod common;

use trapeze_dpdk::Eal;

#[test]
fn missing_hugepages_is_a_clear_error() {
    let prefix = common::Prefix::new("nohuge");
    let dir = std::env::temp_dir().join(format!("tz-empty-hugedir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = format!("--huge-dir={}", dir.display());
    let err = Eal::init(&prefix.args(&[&dir_arg, "-m", "64", "--vdev=net_null0"]))
        .expect_err("no hugepages there");
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(err.op, "rte_eal_init");
    assert!(err.msg.contains("hugepages"), "{err}");
    assert!(err.msg.contains("--no-huge"), "{err}");
    eprintln!("as expected: {err}");
}
