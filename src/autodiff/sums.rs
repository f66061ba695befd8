//! The one place a sweep adds what reaches a node: per node, the sum of
//! the contributions so far (cotangents going down, tangents going up),
//! added to in place when the sweep holds the only reference to the sum,
//! otherwise into a new buffer. Rules only return contributions.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Result;
use crate::ops::accumulate;
use crate::runtime::device::Device;
use crate::runtime::pool::Storage;

/// Sums by node key.
#[derive(Default)]
pub(crate) struct Sums {
    by_node: HashMap<usize, Arc<Storage>>,
}

impl Sums {
    /// Adds contribution `c` (`len` values) to node `key`'s sum.
    pub fn add(&mut self, dev: &Device, key: usize, c: Arc<Storage>, len: usize) -> Result<()> {
        let sum = match self.by_node.remove(&key) {
            None => c,
            Some(mut acc) => {
                if Arc::get_mut(&mut acc).is_some() {
                    accumulate::add_into(dev, &acc, &c, len);
                    acc
                } else {
                    Arc::new(accumulate::add(dev, &acc, &c, len)?)
                }
            }
        };
        self.by_node.insert(key, sum);
        Ok(())
    }

    /// Node `key`'s sum, taken out.
    pub fn take(&mut self, key: usize) -> Option<Arc<Storage>> {
        self.by_node.remove(&key)
    }

    /// Node `key`'s sum when only this sweep holds it (so a kernel may add
    /// to it in place); otherwise it stays where it is.
    pub fn take_unique(&mut self, key: usize) -> Option<Arc<Storage>> {
        let mut acc = self.by_node.remove(&key)?;
        if Arc::get_mut(&mut acc).is_some() {
            return Some(acc);
        }
        self.by_node.insert(key, acc);
        None
    }

    /// Node `key`'s sum, left in place.
    pub fn get(&self, key: usize) -> Option<&Arc<Storage>> {
        self.by_node.get(&key)
    }

    /// Sets node `key`'s sum (a kernel added to it in place).
    pub fn put(&mut self, key: usize, sum: Arc<Storage>) {
        self.by_node.insert(key, sum);
    }
}
