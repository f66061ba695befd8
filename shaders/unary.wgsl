// Elementwise unary ops. Forward: y = f(x). Adjoint, for K cotangents in one
// dispatch: out[k, i] = g[k, i] * f'(s[i]), where s is the value the rule
// saved (x or y); each invocation reads s and computes f' once for its four
// elements, then loops over k.

// The op of the `unary_*` entry points (ALIGNED and SYNC_ROWS: common.wgsl).
// Names are prefixed so that this file composes with binary.wgsl into the
// fused adjoints (see src/ops/fused.rs), which call unary_d with literal ops.
override UNARY_OP: u32 = 0u;

const NEG: u32 = 0u;
const EXP: u32 = 1u;
const LOG: u32 = 2u;
const SIN: u32 = 3u;
const COS: u32 = 4u;
const TANH: u32 = 5u;
const SIGMOID: u32 = 6u;
const RELU: u32 = 7u;
const SQRT: u32 = 8u;
const SQUARE: u32 = 9u;
const ABS: u32 = 10u;
const POWF: u32 = 11u;
const ADD_SCALAR: u32 = 12u;
const MUL_SCALAR: u32 = 13u;

@group(0) @binding(1) var<storage, read> unary_src: array<vec4<f32>>;        // x, or g [K, n]
@group(0) @binding(2) var<storage, read_write> unary_dst: array<vec4<f32>>;  // y, or out [K, n]
@group(0) @binding(3) var<storage, read> unary_saved: array<vec4<f32>>;      // x or y, as saved

// Not constants, so that no compiler folds infinities or NaN at build time.
var<private> INF_BITS: u32 = 0x7f800000u;
var<private> NAN_BITS: u32 = 0x7fc00000u;

// tanh saturates to +-1 in f32 beyond |x| = 9; clamping keeps exp-based
// implementations from computing inf/inf. Clamping would turn NaN into a
// bound, so NaN is passed through.
fn tanh_f(x: vec4<f32>) -> vec4<f32> {
    return select(tanh(clamp(x, vec4(-15.0), vec4(15.0))), x, is_nan4(x));
}
fn tanh_d(y: vec4<f32>) -> vec4<f32> { return 1.0 - y * y; }

// 1 / (1 + e^-x): e^-x -> inf gives 0, -> 0 gives 1; no NaN anywhere.
fn sigmoid_f(x: vec4<f32>) -> vec4<f32> { return 1.0 / (1.0 + exp(-x)); }
fn sigmoid_d(y: vec4<f32>) -> vec4<f32> { return y * (1.0 - y); }

// d relu = 1 where x > 0 (equivalently y > 0), else 0 (PyTorch's choice at 0,
// and at NaN: the gradient is 0 there). relu(NaN) is NaN, as in PyTorch
// (max(NaN, 0) may return either operand).
fn relu_f(x: vec4<f32>) -> vec4<f32> { return select(max(x, vec4(0.0)), x, is_nan4(x)); }
fn relu_d(y: vec4<f32>) -> vec4<f32> { return select(vec4(0.0), vec4(1.0), y > vec4(0.0)); }

// d sqrt = 1 / (2 sqrt x) = 0.5 / y.
fn sqrt_d(y: vec4<f32>) -> vec4<f32> { return 0.5 / y; }

// |x|' = sign(x), 0 at 0 (PyTorch), NaN at NaN.
fn abs_d(x: vec4<f32>) -> vec4<f32> { return select(sign(x), x, is_nan4(x)); }

// x^p for real p. A negative base needs an integer p (odd p keeps the sign),
// else NaN as in PyTorch; 0^p is 0 (p > 0), inf (p < 0); x^0 is 1.
fn pow_real(x: f32, p: f32) -> f32 {
    if (p == 0.0) { return 1.0; }
    if (x == 0.0) { return select(bitcast<f32>(INF_BITS), 0.0, p > 0.0); }
    let mag = exp2(p * log2(abs(x)));
    if (x > 0.0) { return mag; }
    if (fract(p) != 0.0) { return bitcast<f32>(NAN_BITS); }
    return select(mag, -mag, abs(p) % 2.0 == 1.0);
}
fn powf_f(x: vec4<f32>, p: f32) -> vec4<f32> {
    return vec4(pow_real(x.x, p), pow_real(x.y, p), pow_real(x.z, p), pow_real(x.w, p));
}
// d x^p = p x^(p-1).
fn powf_d(x: vec4<f32>, p: f32) -> vec4<f32> { return p * powf_f(x, p - 1.0); }

fn unary_f(op: u32, x: vec4<f32>, p: f32) -> vec4<f32> {
    switch op {
        case NEG: { return -x; }
        case EXP: { return exp(x); }
        case LOG: { return log(x); }
        case SIN: { return sin(x); }
        case COS: { return cos(x); }
        case TANH: { return tanh_f(x); }
        case SIGMOID: { return sigmoid_f(x); }
        case RELU: { return relu_f(x); }
        case SQRT: { return sqrt(x); }
        case SQUARE: { return x * x; }
        case ABS: { return abs(x); }
        case POWF: { return powf_f(x, p); }
        case ADD_SCALAR: { return x + p; }
        case MUL_SCALAR: { return x * p; }
        default: { return x; }
    }
}

// f' from the saved value s: the input for log, sin, cos, square, abs, powf;
// the output for exp, tanh, sigmoid, relu, sqrt; unused otherwise.
fn unary_d(op: u32, s: vec4<f32>, p: f32) -> vec4<f32> {
    switch op {
        case NEG: { return vec4(-1.0); }
        case EXP: { return s; }
        case LOG: { return 1.0 / s; }
        case SIN: { return cos(s); }
        case COS: { return -sin(s); }
        case TANH: { return tanh_d(s); }
        case SIGMOID: { return sigmoid_d(s); }
        case RELU: { return relu_d(s); }
        case SQRT: { return sqrt_d(s); }
        case SQUARE: { return 2.0 * s; }
        case ABS: { return abs_d(s); }
        case POWF: { return powf_d(s, p); }
        case ADD_SCALAR: { return vec4(1.0); }
        case MUL_SCALAR: { return vec4(p); }
        default: { return vec4(0.0); }
    }
}

@compute @workgroup_size(WG)
fn unary_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    unary_dst[t] = unary_f(UNARY_OP, unary_src[t], params.scalar);
}

// out[k] = g[k] * d for the four elements of invocation t.
fn unary_adjoint_row(k: u32, t: u32, d: vec4<f32>) {
    let n = params.n;
    if (ALIGNED) {
        let j = k * (n / 4u) + t;
        unary_dst[j] = unary_src[j] * d;
        return;
    }
    for (var c = 0u; c < 4u; c++) {
        if (t * 4u + c < n) {
            let j = k * n + t * 4u + c;
            unary_dst[j / 4u][j % 4u] = unary_src[j / 4u][j % 4u] * d[c];
        }
    }
}

@compute @workgroup_size(WG)
fn unary_adjoint(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    let d = unary_d(UNARY_OP, unary_saved[t], params.scalar);
    for (var k = 0u; k < params.k; k++) {
        unary_adjoint_row(k, t, d);
    }
}

// `unary_adjoint` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn unary_adjoint_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    var d = vec4(0.0);
    if (live) {
        d = unary_d(UNARY_OP, unary_saved[t], params.scalar);
    }
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            unary_adjoint_row(k, t, d);
        }
        row_sync(k, SYNC_ROWS);
    }
}
