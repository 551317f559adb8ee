//! The EAL (environment abstraction layer): one per process, initialised once, cleaned up on
//! drop.

use core::ffi::{c_char, c_int};
use core::marker::PhantomData;
use std::ffi::CString;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{errno, DpdkError};
use crate::ffi;

/// Where the process stands with the EAL. It only moves forward: DPDK allows one successful
/// `rte_eal_init` per process (not even after `rte_eal_cleanup`), and although it resets its
/// once-flag after some failures, a retry sees options left over from the failed attempt
/// (verified with 22.11: "Option -l is ignored, because (-l) is set!", then EINVAL), so a failed
/// attempt is final too.
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
const UNINIT: u8 = 0;
const INITIALISING: u8 = 1;
const LIVE: u8 = 2;
const CLEANED_UP: u8 = 3;
const FAILED: u8 = 4;

/// Program name given to DPDK as `argv[0]` (it appears in DPDK's log lines).
const PROGRAM_NAME: &str = "trapeze";

/// The initialised DPDK EAL. Every other handle of this crate ([`Mempool`](crate::Mempool),
/// [`Port`](crate::Port), [`Mbuf`](crate::Mbuf), ...) borrows it, so the borrow checker
/// guarantees none of them outlives `rte_eal_cleanup`, which dropping this value calls.
#[derive(Debug)]
pub struct Eal {
    // Not constructible outside `init`; `Send + Sync`: it is a token, its only action (cleanup
    // on drop) needs every borrow to have ended.
    _private: PhantomData<()>,
}

impl Eal {
    /// Initialises DPDK's EAL with `args` (EAL arguments, *without* a program name: one is
    /// supplied), e.g. `["--no-pci", "--no-huge", "-m", "256", "--vdev=net_ring0",
    /// "--file-prefix", "tz1"]`.
    ///
    /// Fails with `EALREADY` if `init` was already called in this process, successfully or not
    /// (DPDK allows one initialisation; after a drop or a failure there is no other), `EINVAL`
    /// for bad arguments, and with
    /// DPDK's errno otherwise; the error message says what DPDK reports and, when the cause is
    /// usually hugepages, how to fix it (or to pass `--no-huge`).
    ///
    /// Note: DPDK pins the calling thread to the main lcore's CPU, and threads spawned from it
    /// later inherit that affinity; pin workers explicitly
    /// ([`pin_current_thread`](crate::lcore::pin_current_thread)).
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        let mut argv_owned = Vec::with_capacity(args.len() + 1);
        for arg in core::iter::once(PROGRAM_NAME).chain(args.iter().map(AsRef::as_ref)) {
            let c = CString::new(arg).map_err(|_| {
                DpdkError::new(
                    "rte_eal_init",
                    errno::EINVAL,
                    format!("EAL argument {arg:?} contains a NUL byte"),
                )
            })?;
            argv_owned.push(c);
        }

        if let Err(state) =
            STATE.compare_exchange(UNINIT, INITIALISING, Ordering::AcqRel, Ordering::Acquire)
        {
            let why = match state {
                FAILED => "an earlier rte_eal_init failed; DPDK cannot be initialised again in this process",
                CLEANED_UP => "the EAL was cleaned up; DPDK cannot be initialised again in this process",
                _ => "the EAL can be initialised only once per process",
            };
            return Err(DpdkError::new("rte_eal_init", errno::EALREADY, why));
        }

        // DPDK keeps (and permutes) `argv`, and may keep pointers to its strings: leak both,
        // once per process.
        let strings: &'static [CString] = Vec::leak(argv_owned);
        let argc = c_int::try_from(strings.len()).expect("fewer than 2^31 EAL arguments");
        let argv: &'static mut [*mut c_char] = Vec::leak(
            strings
                .iter()
                .map(|s| s.as_ptr().cast_mut())
                .chain(core::iter::once(core::ptr::null_mut()))
                .collect(),
        );

        // SAFETY: argv holds argc pointers to NUL-terminated strings followed by NULL, all
        // leaked ('static); STATE (INITIALISING) guarantees no other thread is in rte_eal_init
        // and that it did not succeed before in this process.
        let ret = unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            let err = DpdkError::from_rte_errno("rte_eal_init");
            STATE.store(FAILED, Ordering::Release);
            return Err(with_hint(err, args));
        }
        STATE.store(LIVE, Ordering::Release);
        Ok(Eal {
            _private: PhantomData,
        })
    }

    /// True while an [`Eal`] exists in this process.
    pub fn is_live() -> bool {
        STATE.load(Ordering::Acquire) == LIVE
    }

    /// Cleans up explicitly (what `drop` does), reporting a failure.
    pub fn cleanup(self) -> Result<(), DpdkError> {
        let ret = Self::do_cleanup();
        core::mem::forget(self);
        ret
    }

    fn do_cleanup() -> Result<(), DpdkError> {
        STATE.store(CLEANED_UP, Ordering::Release);
        // SAFETY: the EAL was initialised (an `Eal` exists) and every handle borrowing it is gone
        // (we own `self`), so no DPDK object of ours is used after this; ports were stopped and
        // closed by their drops.
        let ret = unsafe { ffi::rte_eal_cleanup() };
        if ret < 0 {
            return Err(DpdkError::from_rte_errno("rte_eal_cleanup"));
        }
        Ok(())
    }

    /// The number of EAL lcores (as given by `-l`/`-c`, plus registered threads).
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: the EAL is initialised; rte_lcore_count only reads its configuration.
        unsafe { ffi::rte_lcore_count() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // A failing cleanup at drop has no one to report to; DPDK logs it itself.
        let _ = Self::do_cleanup();
    }
}

/// Adds the usual fix to errors that mean "no (usable) hugepages".
fn with_hint<S: AsRef<str>>(err: DpdkError, args: &[S]) -> DpdkError {
    let no_huge = args.iter().any(|a| a.as_ref() == "--no-huge");
    match err.errno {
        errno::ENOMEM | errno::EACCES | errno::ENOENT if !no_huge => err.hint(
            "usually no (or too few) free hugepages: check HugePages_Free in /proc/meminfo, \
             reserve some (echo 256 > /proc/sys/vm/nr_hugepages), mount hugetlbfs on \
             /dev/hugepages, lower -m, or pass --no-huge",
        ),
        errno::ENOMEM if no_huge => err.hint("the -m memory size may be too small or too large"),
        errno::EINVAL => err.hint("an EAL argument was rejected (see DPDK's log above)"),
        _ => err,
    }
}
