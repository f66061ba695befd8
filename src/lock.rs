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

/// Poisons `m`: a thread panics while holding it (tests only).
#[cfg(test)]
pub(crate) fn poison<T: Send>(m: &Mutex<T>) {
    std::thread::scope(|s| {
        let _ = s
            .spawn(|| {
                let _guard = m.lock();
                panic!("poisoning a lock on purpose (this panic is expected)");
            })
            .join();
    });
    assert!(m.is_poisoned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_value() {
        let m = Mutex::new(vec![1, 2]);
        poison(&m);
        m.locked().push(3);
        assert_eq!(*m.locked(), vec![1, 2, 3]);
    }

    /// Every lock a device holds, poisoned at once: forward, backward,
    /// readback, pooled reuse and a new pipeline still work.
    #[test]
    fn a_device_with_every_lock_poisoned_still_works() {
        let dev = match crate::Device::new() {
            Ok(d) => d,
            Err(e) => panic!("pullback tests need a GPU or software adapter: {e}"),
        };
        let run = |dev: &crate::Device| -> crate::Result<Vec<Vec<f32>>> {
            let x = dev.tensor(&[1.0, -2.0, 3.0], &[3])?.requires_grad();
            let y = x.mul(&x)?.sin()?;
            y.sum_all()?.backward()?;
            let g = x
                .grad()
                .ok_or_else(|| crate::error::invalid("test", "no gradient"))?;
            crate::read_all(&[&y, &g])
        };
        let before = run(&dev).unwrap();
        dev.poison_every_lock();
        assert_eq!(run(&dev).unwrap(), before);
        // A kernel compiled after the poisoning (a new pipeline and layout).
        let z = dev.tensor(&[0.5, 0.25], &[2]).unwrap().tanh().unwrap();
        assert_eq!(z.to_vec().unwrap().len(), 2);
    }
}
