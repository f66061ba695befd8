// Elementwise unary ops. Forward: y = f(x). Adjoint, for K cotangents in one
// dispatch: out[k, i] = g[k, i] * f'(s[i]), where s is the value the rule
// saved (x or y); each invocation reads s and computes f' once for its four
// elements, then loops over k. The tangent of K directions is the same
// kernel with g the tangent rows (ẏ = f'·ẋ). Second order: the curvature
// term of the adjoint's tangent, out[k, i] = ẋ[k, i] * ȳ[i] * f''(s[i]).

// The op of the `unary_*` entry points (ALIGNED and SYNC_ROWS: common.wgsl).
// Names are prefixed so that this file composes with binary.wgsl into the
// fused kernels (src/ops/elementwise/codegen.rs), which call unary_f/unary_d
// with literal ops.
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
const GELU: u32 = 14u;
const GELU_TANH: u32 = 15u;
const SILU: u32 = 16u;
const SOFTPLUS: u32 = 17u;
const LOG1P: u32 = 18u;
const EXPM1: u32 = 19u;
const RSQRT: u32 = 20u;
const LEAKY_RELU: u32 = 21u;
const ELU: u32 = 22u;
const CLAMP_MIN: u32 = 23u;
const CLAMP_MAX: u32 = 24u;

@group(0) @binding(1) var<storage, read> unary_src: array<vec4<f32>>;        // x, or g [K, n]
@group(0) @binding(2) var<storage, read_write> unary_dst: array<vec4<f32>>;  // y, or out [K, n]
@group(0) @binding(3) var<storage, read> unary_saved: array<vec4<f32>>;      // x or y, as saved
@group(0) @binding(4) var<storage, read> unary_ybar: array<vec4<f32>>;       // ȳ, one row (curvature)
@group(0) @binding(5) var<storage, read> unary_tangent: array<vec4<f32>>;    // ẋ [K, n] (second order)

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

fn powf_f(x: vec4<f32>, p: f32) -> vec4<f32> {
    return vec4(pow_real(x.x, p), pow_real(x.y, p), pow_real(x.z, p), pow_real(x.w, p));
}
// d x^p = p x^(p-1).
fn powf_d(x: vec4<f32>, p: f32) -> vec4<f32> { return p * powf_f(x, p - 1.0); }

// erfc(z) for z >= 0 with relative error < 1.2e-7 everywhere (Numerical
// Recipes' Chebyshev fit `erfcc`): relative accuracy in the tail is what
// gelu needs at large negative x, where 1 + erf is tiny.
fn erfc_pos(z: vec4<f32>) -> vec4<f32> {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(-z * z + poly);
}
// Φ(x) = (1 + erf(x/√2)) / 2, the standard normal CDF, accurate in both tails.
fn normal_cdf(x: vec4<f32>) -> vec4<f32> {
    let e = erfc_pos(abs(x) * 0.70710678);
    return 0.5 * select(2.0 - e, e, x < vec4(0.0));
}
// gelu(x) = x·Φ(x); gelu' = Φ(x) + x·φ(x), φ the normal density.
fn gelu_d(x: vec4<f32>) -> vec4<f32> {
    return normal_cdf(x) + x * 0.39894228 * exp(-0.5 * x * x);
}
// The tanh form: x/2·(1 + tanh u), u = √(2/π)(x + 0.044715x³). With
// e = e^(−2|u|): 1 + tanh u is 2/(1 + e) for u >= 0 and 2e/(1 + e) below,
// and 1 − tanh² u = 4e/(1 + e)², both without the cancellation of 1 ± t
// when t is near ∓1 (the negative tail, and the derivative's second term).
fn gelu_tanh_u(x: vec4<f32>) -> vec4<f32> { return 0.79788456 * (x + 0.044715 * x * x * x); }
fn gelu_tanh_half_1pt(u: vec4<f32>, e: vec4<f32>) -> vec4<f32> {
    return select(e, vec4(1.0), u >= vec4(0.0)) / (1.0 + e);
}
fn gelu_tanh_f(x: vec4<f32>) -> vec4<f32> {
    let u = gelu_tanh_u(x);
    return x * gelu_tanh_half_1pt(u, exp(-2.0 * abs(u)));
}
fn gelu_tanh_d(x: vec4<f32>) -> vec4<f32> {
    let u = gelu_tanh_u(x);
    let e = exp(-2.0 * abs(u));
    let sech2 = 4.0 * e / ((1.0 + e) * (1.0 + e));
    return gelu_tanh_half_1pt(u, e) + 0.5 * x * sech2 * 0.79788456 * (1.0 + 0.134145 * x * x);
}
// silu(x) = x·σ(x); silu' = σ(x)·(1 + x·(1 − σ(x))).
fn silu_d(x: vec4<f32>) -> vec4<f32> {
    let s = sigmoid_f(x);
    return s * (1.0 + x * (1.0 - s));
}
// log(1 + eˣ) = max(x, 0) + log1p(e^-|x|): no overflow, exact tails;
// its derivative is σ(x).
fn softplus_f(x: vec4<f32>) -> vec4<f32> {
    return select(max(x, vec4(0.0)) + log1p_f(exp(-abs(x))), x, is_nan4(x));
}
// log(1 + x) without losing x's digits near 0. The classic trick,
// log(u)·x/(u − 1) with u = 1 + x, needs a log accurate to an ULP near 1,
// which Vulkan does not promise (2^-21 absolute) and lavapipe's is not; so
// for |x| < 1/2 the series log1p(x) = 2·atanh(s) = 2s·Σ s^2k/(2k+1) with
// s = x/(2 + x), |s| <= 1/3: nine terms reach 0.111^9/19 < 1e-10.
// Beyond, 1 + x keeps x's digits and log is accurate relatively.
fn log1p_f(x: vec4<f32>) -> vec4<f32> {
    let s = x / (2.0 + x);
    let s2 = s * s;
    var sum = vec4(1.0 / 17.0);
    sum = 1.0 / 15.0 + s2 * sum;
    sum = 1.0 / 13.0 + s2 * sum;
    sum = 1.0 / 11.0 + s2 * sum;
    sum = 1.0 / 9.0 + s2 * sum;
    sum = 1.0 / 7.0 + s2 * sum;
    sum = 1.0 / 5.0 + s2 * sum;
    sum = 1.0 / 3.0 + s2 * sum;
    sum = 1.0 + s2 * sum;
    return select(log(1.0 + x), 2.0 * s * sum, abs(x) < vec4(0.5));
}
// eˣ − 1 likewise: for |x| < 1/2 the Taylor series to x^11/11! (Horner:
// x(1 + x/2(1 + x/3(…)))), whose remainder is under 1e-10 relatively;
// beyond, eˣ − 1 cancels at most one bit.
fn expm1_f(x: vec4<f32>) -> vec4<f32> {
    var t = vec4(1.0);
    for (var k = 11.0; k >= 2.0; k -= 1.0) {
        t = 1.0 + x / k * t;
    }
    return select(exp(x) - 1.0, x * t, abs(x) < vec4(0.5));
}
// leaky_relu' = 1 for x > 0, the slope for x <= 0 (PyTorch's choice at 0).
fn leaky_relu_f(x: vec4<f32>, slope: f32) -> vec4<f32> { return select(slope * x, x, x > vec4(0.0)); }
fn leaky_relu_d(x: vec4<f32>, slope: f32) -> vec4<f32> {
    return select(select(vec4(slope), vec4(1.0), x > vec4(0.0)), x, is_nan4(x));
}
// elu = x for x > 0, α(eˣ − 1) else; elu' = 1 for x > 0, α·eˣ else (α at 0).
fn elu_f(x: vec4<f32>, alpha: f32) -> vec4<f32> { return select(alpha * expm1_f(x), x, x > vec4(0.0)); }
fn elu_d(x: vec4<f32>, alpha: f32) -> vec4<f32> {
    return select(select(alpha * exp(x), vec4(1.0), x > vec4(0.0)), x, is_nan4(x));
}
// clamp_min(x, m) = max(x, m), clamp_max(x, m) = min(x, m), NaN kept. The
// derivative is 1 inside the bound, the bound included (PyTorch's clamp
// passes the gradient at x == min and x == max), and NaN at NaN.
fn clamp_min_f(x: vec4<f32>, m: f32) -> vec4<f32> { return select(max(x, vec4(m)), x, is_nan4(x)); }
fn clamp_max_f(x: vec4<f32>, m: f32) -> vec4<f32> { return select(min(x, vec4(m)), x, is_nan4(x)); }
fn clamp_min_d(x: vec4<f32>, m: f32) -> vec4<f32> {
    return select(select(vec4(0.0), vec4(1.0), x >= vec4(m)), x, is_nan4(x));
}
fn clamp_max_d(x: vec4<f32>, m: f32) -> vec4<f32> {
    return select(select(vec4(0.0), vec4(1.0), x <= vec4(m)), x, is_nan4(x));
}

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
        case GELU: { return x * normal_cdf(x); }
        case GELU_TANH: { return gelu_tanh_f(x); }
        case SILU: { return x * sigmoid_f(x); }
        case SOFTPLUS: { return softplus_f(x); }
        case LOG1P: { return log1p_f(x); }
        case EXPM1: { return expm1_f(x); }
        case RSQRT: { return inverseSqrt(x); }
        case LEAKY_RELU: { return leaky_relu_f(x, p); }
        case ELU: { return elu_f(x, p); }
        case CLAMP_MIN: { return clamp_min_f(x, p); }
        case CLAMP_MAX: { return clamp_max_f(x, p); }
        default: { return x; }
    }
}

// f' from the saved value s: the output for exp, tanh, sigmoid, relu, sqrt,
// expm1, rsqrt; unused for neg and the scalar ops; the input otherwise.
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
        case GELU: { return gelu_d(s); }
        case GELU_TANH: { return gelu_tanh_d(s); }
        case SILU: { return silu_d(s); }
        case SOFTPLUS: { return sigmoid_f(s); }
        case LOG1P: { return 1.0 / (1.0 + s); }
        case EXPM1: { return s + 1.0; }
        case RSQRT: { return -0.5 * s * s * s; }
        case LEAKY_RELU: { return leaky_relu_d(s, p); }
        case ELU: { return elu_d(s, p); }
        case CLAMP_MIN: { return clamp_min_d(s, p); }
        case CLAMP_MAX: { return clamp_max_d(s, p); }
        default: { return vec4(0.0); }
    }
}

// f'' from the saved value s (as unary_d), for the ops whose f'' is not 0
// (neg, the scalar ops, relu, abs, leaky_relu and clamp are piecewise
// linear: their rule adds no curvature term). From y: exp y; tanh
// −2y(1 − y²); sigmoid y(1 − y)(1 − 2y); sqrt −1/(4y³); expm1 y + 1; rsqrt
// ¾y⁵. From x: log −1/x²; sin −sin x; cos −cos x; square 2; powf
// p(p − 1)x^(p−2); gelu φ(x)(2 − x²); gelu_tanh s²u′ + ½x·s²(u″ − 2t·u′²)
// (t = tanh u, s² = 1 − t²); silu σ(1 − σ)(2 + x(1 − 2σ)); softplus σ(1 − σ);
// log1p −1/(1 + x)²; elu αeˣ below 0, 0 above.
fn unary_d2(op: u32, s: vec4<f32>, p: f32) -> vec4<f32> {
    switch op {
        case EXP: { return s; }
        case LOG: { return -1.0 / (s * s); }
        case SIN: { return -sin(s); }
        case COS: { return -cos(s); }
        case TANH: { return -2.0 * s * (1.0 - s * s); }
        case SIGMOID: { return s * (1.0 - s) * (1.0 - 2.0 * s); }
        case SQRT: { return -0.25 / (s * s * s); }
        case SQUARE: { return vec4(2.0); }
        case POWF: { return p * (p - 1.0) * powf_f(s, p - 2.0); }
        case GELU: { return 0.39894228 * exp(-0.5 * s * s) * (2.0 - s * s); }
        case GELU_TANH: {
            let u = gelu_tanh_u(s);
            let e = exp(-2.0 * abs(u));
            let t = sign(u) * (1.0 - e) / (1.0 + e);
            let sech2 = 4.0 * e / ((1.0 + e) * (1.0 + e));
            let du = 0.79788456 * (1.0 + 0.134145 * s * s);
            let ddu = 0.79788456 * 0.26829 * s;
            return sech2 * du + 0.5 * s * sech2 * (ddu - 2.0 * t * du * du);
        }
        case SILU: {
            let g = sigmoid_f(s);
            return g * (1.0 - g) * (2.0 + s * (1.0 - 2.0 * g));
        }
        case SOFTPLUS: { let g = sigmoid_f(s); return g * (1.0 - g); }
        case LOG1P: { return -1.0 / ((1.0 + s) * (1.0 + s)); }
        case EXPM1: { return s + 1.0; }
        case RSQRT: { return 0.75 * s * s * s * s * s; }
        case ELU: { return select(select(p * exp(s), vec4(0.0), s > vec4(0.0)), s, is_nan4(s)); }
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

// The curvature term of second order: out[k] = ẋ[k] * (ȳ f''(s)), the tangent
// rows ẋ at binding 1, ȳ one row at binding 4.
@compute @workgroup_size(WG)
fn unary_curvature(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    let d = unary_ybar[t] * unary_d2(UNARY_OP, unary_saved[t], params.scalar);
    for (var k = 0u; k < params.k; k++) {
        unary_adjoint_row(k, t, d);
    }
}

// `unary_curvature` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn unary_curvature_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    var d = vec4(0.0);
    if (live) {
        d = unary_ybar[t] * unary_d2(UNARY_OP, unary_saved[t], params.scalar);
    }
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            unary_adjoint_row(k, t, d);
        }
        row_sync(k, SYNC_ROWS);
    }
}

// The adjoint's tangent in one pass (second order): out[k] = ẏ̄[k]·f'(s) +
// ẋ[k]·ȳ·f''(s), the adjoint's tangent rows ẏ̄ at binding 1, the tangent
// rows ẋ at 5 (the two halves `unary_adjoint` and `unary_curvature` would
// write, then add).
fn unary_second_row(k: u32, t: u32, d: vec4<f32>, c: vec4<f32>) {
    let n = params.n;
    if (ALIGNED) {
        let j = k * (n / 4u) + t;
        unary_dst[j] = unary_src[j] * d + unary_tangent[j] * c;
        return;
    }
    for (var e = 0u; e < 4u; e++) {
        if (t * 4u + e < n) {
            let j = k * n + t * 4u + e;
            unary_dst[j / 4u][j % 4u] =
                unary_src[j / 4u][j % 4u] * d[e] + unary_tangent[j / 4u][j % 4u] * c[e];
        }
    }
}

@compute @workgroup_size(WG)
fn unary_second(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    let s = unary_saved[t];
    let d = unary_d(UNARY_OP, s, params.scalar);
    let c = unary_ybar[t] * unary_d2(UNARY_OP, s, params.scalar);
    for (var k = 0u; k < params.k; k++) {
        unary_second_row(k, t, d, c);
    }
}

// `unary_second` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn unary_second_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    var d = vec4(0.0);
    var c = vec4(0.0);
    if (live) {
        let s = unary_saved[t];
        d = unary_d(UNARY_OP, s, params.scalar);
        c = unary_ybar[t] * unary_d2(UNARY_OP, s, params.scalar);
    }
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            unary_second_row(k, t, d, c);
        }
        row_sync(k, SYNC_ROWS);
    }
}
