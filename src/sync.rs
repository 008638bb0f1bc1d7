//! Locking that survives a poisoned mutex, for the element and the engine alike.
//!
//! A panic on one thread (caught at the C boundary by the element's pad functions, or in a
//! captioner on the worker) poisons the mutexes it held. The data they guard stays consistent
//! (every critical section leaves it valid before anything that can panic), so the next
//! caller takes the guard instead of panicking in turn and taking the pipeline down.

use std::sync::{Condvar, Mutex, MutexGuard};

/// `m.lock()`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `cv.wait(guard)`, poisoned or not.
pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// The text of a caught panic's payload (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
