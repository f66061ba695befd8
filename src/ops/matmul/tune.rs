//! A small GEMM autotune: times the two tiles schedules on square products
//! around the size where one overtakes the other, and sets from what it saw
//! where [`GemmKernel::Auto`] switches to the large tiles on this device.
//! Opt-in (`Device::tune_gemm`, or `PULLBACK_GEMM=tune` for `Device::new`):
//! on GPUs it is a few products of at most 2048³ and two pipelines; on
//! lavapipe each pipeline's first dispatch compiles for ~100 ms, so the
//! device-type defaults stand unless asked.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::ops::matmul::gemm::large_tiles;
use crate::runtime::adapter::GemmKernel;
use crate::runtime::device::Device;

/// One timing of the autotune: `kernel` on an `n`×`n`×`n` product.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmProbe {
    /// The side of the square product.
    pub n: usize,
    /// [`GemmKernel::Tiles`] or [`GemmKernel::LargeTiles`].
    pub kernel: GemmKernel,
    /// The fastest of the timed runs, each a product plus a wait, in ms.
    pub ms: f64,
}

/// What [`Device::tune_gemm`] measured and chose.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmTuning {
    /// Every timing, smallest product first, `Tiles` before `LargeTiles`.
    pub probes: Vec<GemmProbe>,
    /// The 128×128 tiles a product must fill for `Auto` to use
    /// [`GemmKernel::LargeTiles`] from now on ([`Device::large_tile_min_tiles`]).
    pub large_tile_min_tiles: usize,
    /// The whole autotune's wall time, pipelines and buffers included.
    pub took: Duration,
}

/// Timed runs per probe, after one that compiles and warms up.
const RUNS: usize = 3;

/// Runs the autotune `PULLBACK_GEMM=tune` asked for, once, before the
/// device's first product: creating a device runs no kernel.
pub(crate) fn tune_if_asked(dev: &Device) -> Result<()> {
    if dev.shared.tune_asked.swap(false, Ordering::Relaxed) {
        dev.tune_gemm()?;
    }
    Ok(())
}

impl Device {
    /// Times 64×64 against 128×128 tiles on square products (GPUs: 512,
    /// 1024, 2048; CPU adapters: 128, 256, 512), and makes
    /// [`GemmKernel::Auto`] use the large tiles from the tile count of the
    /// smallest probe from which they won at every larger probe (no win at
    /// the largest: only past 4× its tiles). Products keep their values
    /// (every schedule sums each element in the same order); the choice
    /// between [`GemmKernel::Lanes`] and the tiles is not touched. While it
    /// runs, other threads' products on this device may use either tiles.
    pub fn tune_gemm(&self) -> Result<GemmTuning> {
        let start = Instant::now();
        let sizes: [usize; 3] = if self.adapter_info().device_type == wgpu::DeviceType::Cpu {
            [128, 256, 512]
        } else {
            [512, 1024, 2048]
        };
        let before = self.shared.gemm.load(Ordering::Relaxed);
        let mut probes = Vec::new();
        let measured = (|| -> Result<()> {
            for n in sizes {
                let (a, b) = (self.full(&[n, n], 0.5)?, self.full(&[n, n], 0.25)?);
                for kernel in [GemmKernel::Tiles, GemmKernel::LargeTiles] {
                    self.shared.gemm.store(kernel.to_u8(), Ordering::Relaxed);
                    let mut best = f64::INFINITY;
                    for run in 0..=RUNS {
                        let t = Instant::now();
                        drop(a.matmul(&b)?);
                        self.synchronize()?;
                        if run > 0 {
                            best = best.min(t.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    probes.push(GemmProbe {
                        n,
                        kernel,
                        ms: best,
                    });
                }
            }
            Ok(())
        })();
        self.shared.gemm.store(before, Ordering::Relaxed);
        measured?;
        let min_tiles = large_tile_threshold(&probes);
        self.shared
            .large_min_tiles
            .store(min_tiles, Ordering::Relaxed);
        Ok(GemmTuning {
            probes,
            large_tile_min_tiles: min_tiles,
            took: start.elapsed(),
        })
    }

    /// The 128×128 tiles a product must fill for [`GemmKernel::Auto`] to
    /// use [`GemmKernel::LargeTiles`] on this device (outside the lanes
    /// kernel's CPU adapters): [`GemmKernel::LARGE_TILE_MIN_TILES`] on GPUs,
    /// [`GemmKernel::CPU_LARGE_TILE_MIN_TILES`] on CPUs, until
    /// [`Device::tune_gemm`] measures it.
    pub fn large_tile_min_tiles(&self) -> usize {
        self.shared.large_min_tiles.load(Ordering::Relaxed)
    }
}

/// From probes in pairs (Tiles, LargeTiles) by growing size: the tile
/// count of the smallest size from which LargeTiles was faster at every
/// size; none: four times the largest probe's.
fn large_tile_threshold(probes: &[GemmProbe]) -> usize {
    let mut threshold = None;
    for pair in probes.chunks(2).rev() {
        if pair[1].ms < pair[0].ms {
            threshold = Some(large_tiles(pair[0].n, pair[0].n));
        } else {
            break;
        }
    }
    let largest = probes.last().map_or(2048, |p| p.n);
    threshold.unwrap_or(4 * large_tiles(largest, largest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(ms: &[(usize, f64, f64)]) -> Vec<GemmProbe> {
        ms.iter()
            .flat_map(|&(n, tiles, large)| {
                [
                    GemmProbe {
                        n,
                        kernel: GemmKernel::Tiles,
                        ms: tiles,
                    },
                    GemmProbe {
                        n,
                        kernel: GemmKernel::LargeTiles,
                        ms: large,
                    },
                ]
            })
            .collect()
    }

    #[test]
    fn threshold_is_the_smallest_size_won_from_then_on() {
        let t = |ms| large_tile_threshold(&probes(ms));
        // Won at 1024 and 2048: from 1024²'s 64 tiles.
        assert_eq!(
            t(&[(512, 1.0, 1.2), (1024, 2.0, 1.5), (2048, 9.0, 6.0)]),
            64
        );
        // Won at every size: from 512²'s 16.
        assert_eq!(
            t(&[(512, 1.0, 0.9), (1024, 2.0, 1.5), (2048, 9.0, 6.0)]),
            16
        );
        // A win at 512 does not count when 1024 lost: from 2048²'s 256.
        assert_eq!(
            t(&[(512, 1.0, 0.9), (1024, 2.0, 2.5), (2048, 9.0, 6.0)]),
            256
        );
        // Lost at the largest: only past 4× its tiles (4096²).
        assert_eq!(
            t(&[(512, 1.0, 0.9), (1024, 2.0, 1.5), (2048, 6.0, 9.0)]),
            1024
        );
    }
}
