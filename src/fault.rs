//! Faults: what a panic said, and fault injection for the supervisor's tests.
//!
//! Why this exists: "a task that dies never goes unnoticed" needs the panic's message in the
//! log (tasks and UDP threads alike), and must be tested on the real binary.
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

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_else(|| "a panic".into())
}
