// Shared by every pullback kernel (prepended to each shaders/*.wgsl file).
// Binding 0 is the parameter block; words 0..8 are scalars, then slots of 6
// words hold per-dimension shapes and strides (rank <= 6). See
// src/runtime/kernels.rs.

const WG: u32 = 256u;

// IEEE classes from the bits: shader compilers may assume that float
// comparisons never see NaN, so `x != x` is not a reliable test.
fn is_nan4(v: vec4<f32>) -> vec4<bool> {
    return (bitcast<vec4<u32>>(v) & vec4(0x7fffffffu)) > vec4(0x7f800000u);
}
fn not_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// Not constants, so that no compiler folds infinities or NaN at build time.
var<private> INF_BITS: u32 = 0x7f800000u;
var<private> NAN_BITS: u32 = 0x7fc00000u;

// x^p for real p. A negative base needs an integer p (odd p keeps the sign),
// else NaN as in PyTorch; 0^p is 0 (p > 0), inf (p < 0); x^0 is 1.
fn pow_real(x: f32, p: f32) -> f32 {
    if (p == 0.0) { return 1.0; }
    // NaN stays NaN. Tested on the bits: llvmpipe's log2/exp2 give 0 for a
    // NaN, and a compiler may fold x != x away.
    if ((bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u) { return x; }
    if (x == 0.0) { return select(bitcast<f32>(INF_BITS), 0.0, p > 0.0); }
    let mag = exp2(p * log2(abs(x)));
    if (x > 0.0) { return mag; }
    if (fract(p) != 0.0) { return bitcast<f32>(NAN_BITS); }
    return select(mag, -mag, abs(p) % 2.0 == 1.0);
}

// 1.0, read from the parameter block (x2 holds its bits, in
// the kernels that call this) so that the shader
// compiler cannot see it. Compilers that treat float math as reassociable
// (Mesa does for SPIR-V, which naga emits without NoContraction) otherwise
// fold Kahan's compensation ((s + y) - s) - y to 0, leaving a plain sum.
fn opaque_one() -> f32 {
    return bitcast<f32>(params.x2);
}

// One Kahan step: adds `x` to sc = (sum, compensation). Once the sum is
// infinite the compensation would be inf - inf = NaN and poison a sum that
// IEEE says is infinite: it is dropped then (a NaN input still makes the
// sum NaN).
fn kahan_add(sc: vec2<f32>, x: f32, one: f32) -> vec2<f32> {
    let y = x - sc.y;
    let t = sc.x + y;
    let c = (t * one - sc.x) - y;
    return vec2(t, select(c, 0.0, not_finite(c)));
}

// llvmpipe (lavapipe) silently stops an invocation's loops after 65535
// iterations in all (gallivm's guard against endless loops; nesting does
// not help): one invocation must not loop over more than that. Kernels
// that walk a long axis are handed pieces of at most LOOP_PIECE
// (src/runtime/kernels.rs) by the host.

// Overrides several kernels share (declared once, so that modules composed
// of several ops' files, the fused adjoints, declare each once):
// n % 4 == 0: every cotangent row starts on a vec4 boundary.
override ALIGNED: bool = true;
// Rows of a K loop between workgroup barriers; 0: none. See row_sync.
override SYNC_ROWS: u32 = 0u;

struct Params {
    n: u32,        // elements per batch row (per cotangent)
    k: u32,        // batch rows: the K cotangents
    rank: u32,
    scalar: f32,   // op parameter (powf exponent, scalar operand, scale)
    x0: u32,
    x1: u32,
    x2: u32,
    x3: u32,
    slots: array<vec4<u32>, 14>,
}

@group(0) @binding(0) var<uniform> params: Params;

fn slot_word(i: u32) -> u32 {
    return params.slots[i / 4u][i % 4u];
}

// Dimension `d` of slot `slot` (6 words per slot).
fn dim(slot: u32, d: u32) -> u32 {
    return slot_word(slot * 6u + d);
}

// Linear invocation index over a 2-D grid of workgroups (x is capped at 65535).
fn linear_id(wid: vec3<u32>, lid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

fn workgroup_linear(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// Row-major index `i` over the shape in slot `shape_slot`, mapped to an
// element offset through the strides in slot `stride_slot` (a stride of 0
// repeats an element along that axis: broadcasting).
fn strided_offset(i: u32, shape_slot: u32, stride_slot: u32) -> u32 {
    var rem = i;
    var off = 0u;
    for (var d = i32(params.rank) - 1; d >= 0; d--) {
        let size = dim(shape_slot, u32(d));
        off += (rem % size) * dim(stride_slot, u32(d));
        rem /= size;
    }
    return off;
}

// Batched kernels loop over the K cotangent rows inside each invocation, so
// that saved values are read once per element. On CPU adapters (lavapipe)
// one invocation runs the whole loop before the next starts, touching K rows
// that are n floats apart: rows that far apart share cache sets and evict
// each other. A barrier every `every` rows makes the whole workgroup finish
// those rows first, so each row is streamed contiguously (measured on
// lavapipe: a two-output adjoint 2.4x faster). GPUs get every = 0: no barrier.
// Call from uniform control flow only.
fn row_sync(k: u32, every: u32) {
    if (every > 0u && k % every == every - 1u) {
        workgroupBarrier();
    }
}
