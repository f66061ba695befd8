// The elementwise unary ops' math, shared by the unary kernels (unary.wgsl)
// and the fused kernels (src/ops/elementwise/codegen.rs): op codes, each
// op's f and f' (and f'' through unary_d2), and the dispatchers by op code.
// No bindings and no entry points, so that a fused module carries only math.

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

// Each op's f(x) and f'(s) (s: the value its rule saves, see unary_d),
// with one signature (p: the op's parameter, unused by most). The
// dispatchers below call them by op code; the fused kernels
// (src/ops/elementwise/codegen.rs) call them by name, so that a kernel
// holds only its own ops' code and its pipeline does not carry (and the
// driver does not fold away) every op's.
fn unary_neg_f(x: vec4<f32>, p: f32) -> vec4<f32> { return -x; }
fn unary_neg_d(s: vec4<f32>, p: f32) -> vec4<f32> { return vec4(-1.0); }
fn unary_exp_f(x: vec4<f32>, p: f32) -> vec4<f32> { return exp(x); }
fn unary_exp_d(s: vec4<f32>, p: f32) -> vec4<f32> { return s; }
fn unary_log_f(x: vec4<f32>, p: f32) -> vec4<f32> { return log(x); }
fn unary_log_d(s: vec4<f32>, p: f32) -> vec4<f32> { return 1.0 / s; }
fn unary_sin_f(x: vec4<f32>, p: f32) -> vec4<f32> { return sin(x); }
fn unary_sin_d(s: vec4<f32>, p: f32) -> vec4<f32> { return cos(s); }
fn unary_cos_f(x: vec4<f32>, p: f32) -> vec4<f32> { return cos(x); }
fn unary_cos_d(s: vec4<f32>, p: f32) -> vec4<f32> { return -sin(s); }
fn unary_tanh_f(x: vec4<f32>, p: f32) -> vec4<f32> { return tanh_f(x); }
fn unary_tanh_d(s: vec4<f32>, p: f32) -> vec4<f32> { return tanh_d(s); }
fn unary_sigmoid_f(x: vec4<f32>, p: f32) -> vec4<f32> { return sigmoid_f(x); }
fn unary_sigmoid_d(s: vec4<f32>, p: f32) -> vec4<f32> { return sigmoid_d(s); }
fn unary_relu_f(x: vec4<f32>, p: f32) -> vec4<f32> { return relu_f(x); }
fn unary_relu_d(s: vec4<f32>, p: f32) -> vec4<f32> { return relu_d(s); }
fn unary_sqrt_f(x: vec4<f32>, p: f32) -> vec4<f32> { return sqrt(x); }
fn unary_sqrt_d(s: vec4<f32>, p: f32) -> vec4<f32> { return sqrt_d(s); }
fn unary_square_f(x: vec4<f32>, p: f32) -> vec4<f32> { return x * x; }
fn unary_square_d(s: vec4<f32>, p: f32) -> vec4<f32> { return 2.0 * s; }
fn unary_abs_f(x: vec4<f32>, p: f32) -> vec4<f32> { return abs(x); }
fn unary_abs_d(s: vec4<f32>, p: f32) -> vec4<f32> { return abs_d(s); }
fn unary_powf_f(x: vec4<f32>, p: f32) -> vec4<f32> { return powf_f(x, p); }
fn unary_powf_d(s: vec4<f32>, p: f32) -> vec4<f32> { return powf_d(s, p); }
fn unary_add_scalar_f(x: vec4<f32>, p: f32) -> vec4<f32> { return x + p; }
fn unary_add_scalar_d(s: vec4<f32>, p: f32) -> vec4<f32> { return vec4(1.0); }
fn unary_mul_scalar_f(x: vec4<f32>, p: f32) -> vec4<f32> { return x * p; }
fn unary_mul_scalar_d(s: vec4<f32>, p: f32) -> vec4<f32> { return vec4(p); }
fn unary_gelu_f(x: vec4<f32>, p: f32) -> vec4<f32> { return x * normal_cdf(x); }
fn unary_gelu_d(s: vec4<f32>, p: f32) -> vec4<f32> { return gelu_d(s); }
fn unary_gelu_tanh_f(x: vec4<f32>, p: f32) -> vec4<f32> { return gelu_tanh_f(x); }
fn unary_gelu_tanh_d(s: vec4<f32>, p: f32) -> vec4<f32> { return gelu_tanh_d(s); }
fn unary_silu_f(x: vec4<f32>, p: f32) -> vec4<f32> { return x * sigmoid_f(x); }
fn unary_silu_d(s: vec4<f32>, p: f32) -> vec4<f32> { return silu_d(s); }
fn unary_softplus_f(x: vec4<f32>, p: f32) -> vec4<f32> { return softplus_f(x); }
fn unary_softplus_d(s: vec4<f32>, p: f32) -> vec4<f32> { return sigmoid_f(s); }
fn unary_log1p_f(x: vec4<f32>, p: f32) -> vec4<f32> { return log1p_f(x); }
fn unary_log1p_d(s: vec4<f32>, p: f32) -> vec4<f32> { return 1.0 / (1.0 + s); }
fn unary_expm1_f(x: vec4<f32>, p: f32) -> vec4<f32> { return expm1_f(x); }
fn unary_expm1_d(s: vec4<f32>, p: f32) -> vec4<f32> { return s + 1.0; }
fn unary_rsqrt_f(x: vec4<f32>, p: f32) -> vec4<f32> { return inverseSqrt(x); }
fn unary_rsqrt_d(s: vec4<f32>, p: f32) -> vec4<f32> { return -0.5 * s * s * s; }
fn unary_leaky_relu_f(x: vec4<f32>, p: f32) -> vec4<f32> { return leaky_relu_f(x, p); }
fn unary_leaky_relu_d(s: vec4<f32>, p: f32) -> vec4<f32> { return leaky_relu_d(s, p); }
fn unary_elu_f(x: vec4<f32>, p: f32) -> vec4<f32> { return elu_f(x, p); }
fn unary_elu_d(s: vec4<f32>, p: f32) -> vec4<f32> { return elu_d(s, p); }
fn unary_clamp_min_f(x: vec4<f32>, p: f32) -> vec4<f32> { return clamp_min_f(x, p); }
fn unary_clamp_min_d(s: vec4<f32>, p: f32) -> vec4<f32> { return clamp_min_d(s, p); }
fn unary_clamp_max_f(x: vec4<f32>, p: f32) -> vec4<f32> { return clamp_max_f(x, p); }
fn unary_clamp_max_d(s: vec4<f32>, p: f32) -> vec4<f32> { return clamp_max_d(s, p); }

fn unary_f(op: u32, x: vec4<f32>, p: f32) -> vec4<f32> {
    switch op {
        case NEG: { return unary_neg_f(x, p); }
        case EXP: { return unary_exp_f(x, p); }
        case LOG: { return unary_log_f(x, p); }
        case SIN: { return unary_sin_f(x, p); }
        case COS: { return unary_cos_f(x, p); }
        case TANH: { return unary_tanh_f(x, p); }
        case SIGMOID: { return unary_sigmoid_f(x, p); }
        case RELU: { return unary_relu_f(x, p); }
        case SQRT: { return unary_sqrt_f(x, p); }
        case SQUARE: { return unary_square_f(x, p); }
        case ABS: { return unary_abs_f(x, p); }
        case POWF: { return unary_powf_f(x, p); }
        case ADD_SCALAR: { return unary_add_scalar_f(x, p); }
        case MUL_SCALAR: { return unary_mul_scalar_f(x, p); }
        case GELU: { return unary_gelu_f(x, p); }
        case GELU_TANH: { return unary_gelu_tanh_f(x, p); }
        case SILU: { return unary_silu_f(x, p); }
        case SOFTPLUS: { return unary_softplus_f(x, p); }
        case LOG1P: { return unary_log1p_f(x, p); }
        case EXPM1: { return unary_expm1_f(x, p); }
        case RSQRT: { return unary_rsqrt_f(x, p); }
        case LEAKY_RELU: { return unary_leaky_relu_f(x, p); }
        case ELU: { return unary_elu_f(x, p); }
        case CLAMP_MIN: { return unary_clamp_min_f(x, p); }
        case CLAMP_MAX: { return unary_clamp_max_f(x, p); }
        default: { return x; }
    }
}
// f' from the saved value s: the output for exp, tanh, sigmoid, relu, sqrt,
// expm1, rsqrt; unused for neg and the scalar ops; the input otherwise.
fn unary_d(op: u32, s: vec4<f32>, p: f32) -> vec4<f32> {
    switch op {
        case NEG: { return unary_neg_d(s, p); }
        case EXP: { return unary_exp_d(s, p); }
        case LOG: { return unary_log_d(s, p); }
        case SIN: { return unary_sin_d(s, p); }
        case COS: { return unary_cos_d(s, p); }
        case TANH: { return unary_tanh_d(s, p); }
        case SIGMOID: { return unary_sigmoid_d(s, p); }
        case RELU: { return unary_relu_d(s, p); }
        case SQRT: { return unary_sqrt_d(s, p); }
        case SQUARE: { return unary_square_d(s, p); }
        case ABS: { return unary_abs_d(s, p); }
        case POWF: { return unary_powf_d(s, p); }
        case ADD_SCALAR: { return unary_add_scalar_d(s, p); }
        case MUL_SCALAR: { return unary_mul_scalar_d(s, p); }
        case GELU: { return unary_gelu_d(s, p); }
        case GELU_TANH: { return unary_gelu_tanh_d(s, p); }
        case SILU: { return unary_silu_d(s, p); }
        case SOFTPLUS: { return unary_softplus_d(s, p); }
        case LOG1P: { return unary_log1p_d(s, p); }
        case EXPM1: { return unary_expm1_d(s, p); }
        case RSQRT: { return unary_rsqrt_d(s, p); }
        case LEAKY_RELU: { return unary_leaky_relu_d(s, p); }
        case ELU: { return unary_elu_d(s, p); }
        case CLAMP_MIN: { return unary_clamp_min_d(s, p); }
        case CLAMP_MAX: { return unary_clamp_max_d(s, p); }
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
