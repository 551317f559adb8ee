//! Lcores, threads and time.
//!
//! Workers are **std threads** (`std::thread::scope`), not `rte_eal_remote_launch`: a scoped
//! thread can borrow the [`Port`](crate::Port)'s queues and the [`Mempool`](crate::Mempool)
//! (whose lifetimes tie them to the [`Eal`]), a panic unwinds normally instead of aborting at a
//! C frame, and no `'static` boxed closure or trampoline is needed. Each worker calls
//! [`pin_current_thread`] (its CPU) and then [`register_thread`] (an lcore id, so mempool
//! per-lcore caches and `rte_lcore_id()` work), and keeps the [`ThreadRegistration`] alive while
//! it polls.

use core::marker::PhantomData;

use crate::eal::Eal;
use crate::error::DpdkError;
use crate::ffi;

/// The calling thread's lcore id: `Some` on the EAL main thread, EAL worker threads and
/// [registered](register_thread) threads; `None` on other threads (`LCORE_ID_ANY`).
pub fn lcore_id() -> Option<u32> {
    // SAFETY: reads a thread-local; valid on any thread, before or after EAL init.
    let id = unsafe { ffi::tz_lcore_id() };
    (id != ffi::LCORE_ID_ANY).then_some(id)
}

/// The calling thread's NUMA socket as DPDK sees it, `None` if unknown.
pub fn socket_id() -> Option<u32> {
    // SAFETY: reads a thread-local; no preconditions.
    let id = unsafe { ffi::rte_socket_id() };
    (id as i32 != ffi::SOCKET_ID_ANY).then_some(id)
}

/// The time-stamp counter (`rte_get_tsc_cycles`, `rdtsc`).
#[inline]
pub fn tsc() -> u64 {
    // SAFETY: reads the CPU's time-stamp counter; no preconditions.
    unsafe { ffi::tz_get_tsc_cycles() }
}

/// TSC ticks per second (`rte_get_tsc_hz`); 0 before the EAL is initialised.
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL computed at init (0 before); no preconditions.
    unsafe { ffi::tz_get_tsc_hz() }
}

/// Pins the calling thread to CPU `cpu` (`rte_thread_set_affinity`, which also updates DPDK's
/// idea of the thread's socket). Do it before [`register_thread`].
pub fn pin_current_thread(cpu: u32) -> Result<(), DpdkError> {
    // SAFETY: affects only the calling thread; the shim checks cpu against CPU_SETSIZE.
    let ret = unsafe { ffi::tz_thread_pin_to_cpu(cpu) };
    if ret != 0 {
        return Err(DpdkError::from_errno(
            "rte_thread_set_affinity",
            if ret < 0 { ret } else { crate::errno::EINVAL },
        )
        .hint(&format!("cannot pin to CPU {cpu}")));
    }
    Ok(())
}

/// The calling thread's lcore registration; unregisters on drop. Not `Send`: it belongs to the
/// thread that registered.
#[derive(Debug)]
pub struct ThreadRegistration<'e> {
    _eal: PhantomData<&'e Eal>,
    _not_send: PhantomData<*const ()>,
}

/// Gives the calling (non-EAL) thread an lcore id (`rte_thread_register`), so that mempool
/// per-lcore caches and [`lcore_id`] work on it. Fails with `ENOMEM` when all `RTE_MAX_LCORE`
/// ids are taken, or `EINVAL` if the thread already has one.
pub fn register_thread(_eal: &Eal) -> Result<ThreadRegistration<'_>, DpdkError> {
    if lcore_id().is_some() {
        return Err(DpdkError::new(
            "rte_thread_register",
            crate::errno::EINVAL,
            "this thread already has an lcore id",
        ));
    }
    // SAFETY: the EAL is initialised (borrowed); registers the calling thread only.
    let ret = unsafe { ffi::rte_thread_register() };
    if ret < 0 {
        return Err(DpdkError::from_rte_errno("rte_thread_register"));
    }
    Ok(ThreadRegistration {
        _eal: PhantomData,
        _not_send: PhantomData,
    })
}

impl Drop for ThreadRegistration<'_> {
    fn drop(&mut self) {
        // SAFETY: we are on the thread that registered (ThreadRegistration is !Send) and the EAL
        // is alive ('e); releases this thread's lcore id.
        unsafe { ffi::rte_thread_unregister() }
    }
}
