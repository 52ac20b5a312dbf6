//! Fault injection for the supervisor's tests, in debug builds only.
//!
//! Why this exists: "a task that dies never goes unnoticed" must be tested on the real binary.
//! In a debug build (what `cargo test` runs), `HEALTHDNS_FAULT=<task>` makes the named task
//! panic at its fault point; release builds compile the check away.

/// Panics if `HEALTHDNS_FAULT` names `task` (debug builds only).
#[inline]
pub fn point(task: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("HEALTHDNS_FAULT").is_ok_and(|value| value == task) {
        panic!("injected fault in the {task} task (HEALTHDNS_FAULT)");
    }
    #[cfg(not(debug_assertions))]
    let _ = task;
}
