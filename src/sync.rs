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
