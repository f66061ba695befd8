//! One pass from its seeds ([`Pass::run`], the one way every traversal
//! executes a plan: reverse, forward or second order), and passes over
//! many rows (cotangents, tangents, directions) split into chunks where one
//! pass would exceed the memory budget or a `[K, …]` buffer the adapter's
//! limits ([`Pass::chunked`]); `vjp.rs`, `jvp.rs`, `jacobian.rs`,
//! `hessian.rs`, `backward.rs` and `per_example/` drive them.
//!
//! Whether all K rows fit one pass is read off the plan where no budget is
//! set ([`Pass::fits_whole`]): no dry run. A chunk is a pass over rows
//! `start..start + c` of the K seeds with one submit; its result rows are
//! copied on the device into the result, which is allocated once (and is
//! not counted against the budget). Every kernel computes a row the same
//! way whatever the number of rows, so a chunked result equals the
//! unchunked one bit for bit.

use std::sync::{Arc, OnceLock};

use crate::autodiff::fusion::{self, Regions};
use crate::autodiff::plan::{Plan, Sweep};
use crate::autodiff::scheduler;
use crate::error::{Error, Result};
use crate::ops::fill;
use crate::runtime::device::Device;
use crate::runtime::pool::{Storage, size_class};
use crate::shape::numel;
use crate::tape::graph::Node;

/// Where a pass's seed cotangents come from.
#[derive(Clone, Copy)]
pub(crate) enum Seeds<'a> {
    /// These buffers, one per root, bound as they are (the caller's; not
    /// counted as the pass's memory).
    Given(&'a [Arc<Storage>]),
    /// Rows `start..start + k` of the caller's `[K, …]` cotangents, copied
    /// into buffers of the pass.
    Rows(&'a [Arc<Storage>], usize),
    /// Rows `start..start + k` of the identity (one root: Jacobian rows),
    /// written by a kernel.
    Identity(usize),
    /// Ones (per-example passes: every example's loss seeded with 1).
    Ones,
}

/// A plan to execute on a device in one direction, and its fused regions,
/// found once for all its chunks and dry runs.
pub(crate) struct Pass<'a> {
    pub dev: &'a Device,
    pub plan: &'a Plan,
    sweep: Sweep,
    regions: OnceLock<Regions>,
}

impl<'a> Pass<'a> {
    /// A reverse-mode pass.
    pub fn new(dev: &'a Device, plan: &'a Plan) -> Pass<'a> {
        Pass::sweeping(dev, plan, Sweep::Reverse)
    }

    pub fn sweeping(dev: &'a Device, plan: &'a Plan, sweep: Sweep) -> Pass<'a> {
        Pass {
            dev,
            plan,
            sweep,
            regions: OnceLock::new(),
        }
    }

    /// The regions of the plan that run as one fused kernel (none when
    /// fused adjoints are off, or in second order, whose curvature terms
    /// need every member's adjoint and tangent).
    fn regions(&self) -> &Regions {
        self.regions.get_or_init(|| {
            if !self.dev.fused_adjoints() || self.sweep == Sweep::SecondOrder {
                return Regions::default();
            }
            let roots = self.plan.roots.iter().map(|n| n.key()).collect();
            fusion::find(self.plan, &roots, self.dev.max_storage_bindings())
        })
    }

    /// The nodes the seeds are given for: the roots in reverse mode (their
    /// cotangents), the wanted nodes otherwise (their tangents).
    fn seeded(&self) -> &[Arc<Node>] {
        match self.sweep {
            Sweep::Reverse => &self.plan.roots,
            Sweep::Forward | Sweep::SecondOrder => &self.plan.wanted,
        }
    }

    /// The nodes the pass returns results for: the wanted nodes, or the
    /// roots in forward mode (their tangents).
    pub fn results(&self) -> &[Arc<Node>] {
        match self.sweep {
            Sweep::Reverse | Sweep::SecondOrder => &self.plan.wanted,
            Sweep::Forward => &self.plan.roots,
        }
    }

    /// One pass over `k` rows on `dev` (the real device or a dry run):
    /// seeds, sweep, and per result node what reached it (None: nothing).
    /// Records into the pending encoder; submits nothing.
    pub fn run(&self, dev: &Device, k: usize, seeds: Seeds) -> Result<Vec<Option<Arc<Storage>>>> {
        let mut list = Vec::with_capacity(self.seeded().len());
        for (i, node) in self.seeded().iter().enumerate() {
            let rows = self.plan.rows(node, k);
            let n = numel(&node.shape);
            let v = match seeds {
                Seeds::Given(v) => v[i].clone(),
                Seeds::Rows(v, start) => {
                    let s = dev.alloc("cotangent rows", rows * n)?;
                    dev.copy(&v[i], start * n, &s, 0, rows * n);
                    Arc::new(s)
                }
                Seeds::Identity(start) => Arc::new(fill::identity_rows(dev, rows, n, start)?),
                Seeds::Ones => Arc::new(fill::fill(dev, rows * n, 1.0)?),
            };
            list.push((node.clone(), v));
        }
        scheduler::execute(dev, self.plan, self.regions(), self.sweep, k, list)
    }

    /// [`Pass::run`] with zeros for unreached nodes: all K rows in one pass.
    pub fn whole(&self, dev: &Device, k: usize, seeds: Seeds) -> Result<Vec<Arc<Storage>>> {
        let reached = self.run(dev, k, seeds)?;
        let mut out = Vec::with_capacity(reached.len());
        for (g, node) in reached.into_iter().zip(self.results()) {
            out.push(match g {
                Some(g) => g,
                None => Arc::new(fill::fill(dev, self.plan.cotangent_len(node, k), 0.0)?),
            });
        }
        Ok(out)
    }

    /// Working bytes of one chunk of `c` rows (seed copies, cotangents,
    /// scratch, the chunk's gradients), or the error a real chunk would hit.
    pub fn chunk_bytes(&self, c: usize, seeds: Seeds) -> Result<u64> {
        Plan::working_bytes(self.dev, |dry| self.run(dry, c, seeds))
    }

    /// Rows one pass may take: adjoint kernels loop over the rows (up to 4
    /// iterations each), and where the driver bounds an invocation's loops
    /// (lavapipe, see `Device::loop_limit`) a pass stays within a quarter
    /// of the bound.
    fn row_cap(&self) -> usize {
        self.dev.loop_limit().map_or(usize::MAX, |l| (l / 4).max(1))
    }

    /// Whether all `k` rows go in one pass: within the row cap, and within
    /// the binding limit, read off the plan (no buffer of the pass is wider
    /// than `k` times [`Plan::widest_row`]) or, where that bound does not
    /// fit, found by a dry run; with a memory budget set, within it (a dry
    /// run: the budget bounds the pass's exact working memory).
    pub fn fits_whole(&self, k: usize, seeds: Seeds) -> bool {
        let widest = k.saturating_mul(self.plan.widest_row());
        if self.dev.memory_budget().is_none()
            && self.dev.memory_room().is_none()
            && k <= self.row_cap()
            && self.dev.check_bindable("a pass", widest).is_ok()
        {
            return true;
        }
        self.chunk_fits(k, seeds, 0)
    }

    /// Whether a chunk of `c` rows fits the limits and the budget (a dry
    /// run), and under a memory limit fits what the limit leaves beside
    /// `reserve` bytes (the whole result a chunked pass allocates first).
    fn chunk_fits(&self, c: usize, seeds: Seeds, reserve: u64) -> bool {
        c <= self.row_cap()
            && self.chunk_bytes(c, seeds).is_ok_and(|b| {
                self.dev.memory_budget().is_none_or(|budget| b <= budget)
                    && self
                        .dev
                        .memory_room()
                        .is_none_or(|room| b + reserve <= room)
            })
    }

    /// Bytes of the `[K, …]` results a chunked pass allocates before its
    /// chunks.
    fn results_bytes(&self, k: usize) -> u64 {
        self.results()
            .iter()
            .map(|n| size_class(4 * (k * numel(&n.shape)) as u64))
            .sum()
    }

    /// The largest chunk of rows (at most `k`) that fits; an error saying
    /// what one row needs when not even one does.
    pub fn chunk_rows(&self, k: usize, seeds: Seeds) -> Result<usize> {
        let reserve = self.results_bytes(k);
        if !self.chunk_fits(1, seeds, reserve) {
            let bytes = self.chunk_bytes(1, seeds)?; // the limit error, if any
            let budget = self.dev.memory_budget().unwrap_or(u64::MAX);
            // The memory limit, not the budget, is what one row passes.
            if bytes <= budget {
                return Err(Error::OutOfMemory {
                    requested: bytes + reserve,
                    live: self.dev.stats().live_bytes,
                });
            }
            return Err(Error::MemoryBudget {
                row_bytes: bytes,
                budget,
            });
        }
        // Working memory grows with the rows: bisect for the largest fit.
        let (mut lo, mut hi) = (1, k.min(self.row_cap()));
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.chunk_fits(mid, seeds, reserve) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        // Even chunks: the same number of passes, less left for the last.
        Ok(k.div_ceil(k.div_ceil(lo)))
    }

    /// All K rows, chunked by `chunk` rows (None: the largest that fits),
    /// seeded per chunk by `seeds(start)`. Returns per result node its
    /// `[K·rows, …]` result. Submits once per chunk.
    pub fn chunked<'s>(
        &self,
        k: usize,
        chunk: Option<usize>,
        seeds: impl Fn(usize) -> Seeds<'s>,
    ) -> Result<Vec<Arc<Storage>>> {
        let c = match chunk {
            Some(c) => c.clamp(1, k.max(1)),
            None => self.chunk_rows(k, seeds(0))?,
        };
        let dev = self.dev;
        let mut results = Vec::with_capacity(self.results().len());
        for node in self.results() {
            let r = dev.alloc_large("gradient", k * numel(&node.shape))?;
            dev.clear(&r);
            results.push(r);
        }
        for start in (0..k).step_by(c) {
            let rows = c.min(k - start);
            let grads = self.run(dev, rows, seeds(start))?;
            for ((g, r), node) in grads.iter().zip(&results).zip(self.results()) {
                if let Some(g) = g {
                    let n = numel(&node.shape);
                    dev.copy(g, 0, r, start * n, rows * n);
                }
            }
            drop(grads);
            dev.flush()?;
        }
        Ok(results.into_iter().map(Arc::new).collect())
    }
}
