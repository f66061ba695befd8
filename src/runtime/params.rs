//! The parameter block every kernel reads at binding 0 (`Params` in
//! `shaders/common.wgsl`): a kernel's sizes, scalars, and per-dim shapes and
//! strides, passed as a uniform so that one compiled pipeline serves every
//! size (only override constants make new variants).

use crate::shape::MAX_RANK;

/// The parameter block at binding 0: `Params` in `shaders/common.wgsl`.
/// Words 0..8 are scalars; from word 8 on, slots of 6 words hold per-dim
/// shapes and strides (rank <= 6).
#[derive(Clone, Copy)]
pub(crate) struct Params {
    words: [u32; 64],
}

const SLOT_BASE: usize = 8;
const SLOTS: usize = (64 - SLOT_BASE) / MAX_RANK;

impl Params {
    /// `n` elements per batch row, `k` rows (cotangents).
    pub fn new(n: usize, k: usize) -> Self {
        let mut words = [0u32; 64];
        words[0] = n as u32;
        words[1] = k as u32;
        Params { words }
    }
    pub fn rank(mut self, rank: usize) -> Self {
        self.words[2] = rank as u32;
        self
    }
    pub fn scalar(mut self, s: f32) -> Self {
        self.words[3] = s.to_bits();
        self
    }
    /// Word `i` of the block, whatever it means to the kernel (custom ops'
    /// `PbParams`, `shaders/custom/prelude.wgsl`).
    pub fn word(mut self, i: usize, v: u32) -> Self {
        self.words[i] = v;
        self
    }
    /// Extra scalar words `x0..x3` (word 4 + i).
    pub fn extra(mut self, i: usize, v: usize) -> Self {
        self.words[4 + i] = v as u32;
        self
    }
    /// Slot `slot` holds `values` (right-aligned dims are the caller's job).
    pub fn slot(mut self, slot: usize, values: &[usize]) -> Self {
        debug_assert!(slot < SLOTS && values.len() <= MAX_RANK);
        for (d, &v) in values.iter().enumerate() {
            self.words[SLOT_BASE + slot * MAX_RANK + d] = v as u32;
        }
        self
    }
    /// Word `i` of the slot area (slot s, dim d is word 6s + d).
    pub fn slot_word(mut self, i: usize, v: u32) -> Self {
        self.words[SLOT_BASE + i] = v;
        self
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.words)
    }
}
