//! Locks that survive a panic elsewhere. A mutex is poisoned when a thread
//! panics while holding it; every value pullback guards stays consistent
//! across such a panic (each critical section is a single insert, pop,
//! take or swap), so the guard is recovered and used: never a second panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) trait Recover<T> {
    /// The lock's guard, recovered if a panicking thread poisoned it.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Recover<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
