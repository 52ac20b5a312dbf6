//! healthdns: an authoritative DNS server that answers only with healthy addresses.
//!
//! Data flows one way, and the modules follow it:
//! config -> health (probes -> verdicts (+ peer votes, `cluster`) -> pool answers) -> publish (the one snapshot writer)
//! -> zone snapshot (swapped atomically with `ArcSwap`) -> dns (answers, transfers, NOTIFY)
//! and export (snapshot files, state).
//! - [`config`]: the strict TOML file format and the validated runtime `Config`.
//! - [`zone`]: master files, the snapshot, rendering and serials.
//! - [`health`]: probes, scheduling, verdicts, selection and the table joining them to pools.
//! - [`cluster`]: peer votes over sealed chitchat gossip: this instance's verdicts out, the
//!   peers' in (the rule that uses them is `health::agreement`).
//! - [`publish`]: the one writer that rebuilds and swaps the snapshot when an answer changes.
//! - [`export`]: snapshot files and the state file, written off the answer path.
//! - [`atomic`]: whole-file writes that a crash cannot leave half done.
//! - [`dns`]: sockets, message rules, answering, zone transfers and NOTIFY.
//! - [`api`]: the HTTP API (metrics, health, status), reading the publisher's report.
//! - [`reload`]: re-reading the config and zones while serving; owns the running probes.
//! - [`supervisor`]: the one owner of every long-running task; none dies unnoticed.
//! - [`service`]: start-up, and the tasks of a running server.
//! - [`log_gate`]: rate-limited log lines for events a remote sender can trigger.
//! - [`fault`]: fault injection for the supervisor tests (debug builds only).
//! - [`socket_buffer`]: receive buffers for the DNS and ICMP sockets.
//! - [`wall_clock`]: the time since 1970, for TSIG, gossip and status stamps.
//!
//! A module may use the modules before it in this flow, never the ones after it.

pub mod api;
pub mod atomic;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod export;
pub mod fault;
pub mod health;
pub mod log_gate;
pub mod publish;
pub mod reload;
pub mod service;
pub mod socket_buffer;
pub mod supervisor;
pub mod wall_clock;
pub mod zone;

/// A global allocator for the unit tests that counts this thread's allocations, so a test
/// can assert that a path allocates nothing.
#[cfg(test)]
pub mod test_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
    }

    pub struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = COUNT.try_with(|count| count.set(count.get().map(|value| value + 1)));
            // SAFETY: the caller's contract is passed on.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract is passed on.
            unsafe { System.dealloc(pointer, layout) }
        }
        unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
            let _ = COUNT.try_with(|count| count.set(count.get().map(|value| value + 1)));
            // SAFETY: the caller's contract is passed on.
            unsafe { System.realloc(pointer, layout, size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// How many allocations `work` made on this thread.
    pub fn count(work: impl FnOnce()) -> u64 {
        COUNT.with(|count| count.set(Some(0)));
        work();
        COUNT.with(|count| count.replace(None)).unwrap_or(0)
    }
}
