//! A bad EAL argument is an `Err`, not a crash, and it is final for the process.

#![cfg(not(tz_no_dpdk))]

mod common;

use trapeze_dpdk::{errno, Eal};

#[test]
fn eal_errors() {
    let prefix = common::Prefix::new("errors");

    let err = Eal::init(&prefix.args(&["--no-huge", "--definitely-not-an-eal-option"]))
        .expect_err("unknown EAL option");
    assert_eq!(err.op, "rte_eal_init");
    assert_eq!(err.errno, errno::EINVAL, "{err}");
    assert!(err.to_string().contains("rte_eal_init failed"), "{err}");

    let err = Eal::init(&["--no-pci", "bad\0arg"]).expect_err("NUL in an argument");
    assert_eq!(err.errno, errno::EINVAL);
    assert!(!Eal::is_live());

    // A failed init is final: DPDK keeps state from the failed attempt.
    let err = Eal::init(&prefix.args(&["--no-huge", "-m", "128"])).expect_err("second init");
    assert_eq!(err.errno, errno::EALREADY, "{err}");
    assert!(err.msg.contains("earlier rte_eal_init failed"), "{err}");
}
