//! Hessian-vector products (`hvp`, `hvp_batched`) against float64:
//!
//! - an exact quadratic, ½xᵀAx + bᵀx, whose H·v is A·v;
//! - every op with second derivatives (each unary op, mul, div and pow
//!   with broadcasting, matmul) in `Σ u ⊙ op(x)`, against the f64 central
//!   difference of the op's analytic f64 gradient;
//! - a small MLP with tanh and softmax cross-entropy, against the f64
//!   central difference of its f64 gradient (written out below), and its
//!   Hessian, built from `hvp_batched` with identity directions, symmetric;
//! - `hvp_batched` against a loop of `hvp`, fused and unfused adjoints,
//!   and the errors.
//!
//! Tolerances: the GPU computes in f32 what the f64 references compute in
//! f64, so a product may differ by a few ULP of the magnitudes it sums; the
//! references' own central differences (step 1e-4, fourth order) are
//! accurate to ~1e-10. Each test states its bound.

mod common;

use common::*;
use pullback::{Error, Tensor};

/// ⟨a, b⟩ and Σ|aᵢbᵢ| in f64.
fn dot(a: &[f64], b: &[f64]) -> (f64, f64) {
    a.iter()
        .zip(b)
        .fold((0.0, 0.0), |(s, m), (x, y)| (s + x * y, m + (x * y).abs()))
}

/// The fourth-order central difference of `grad` along `v` at `x`:
/// (H·v) to ~1e-10 for smooth f64 functions (step 1e-4).
fn fd_hvp(grad: &dyn Fn(&[f64]) -> Vec<f64>, x: &[f64], v: &[f64]) -> Vec<f64> {
    let h = 1e-4;
    let at = |s: f64| -> Vec<f64> {
        let xs: Vec<f64> = x.iter().zip(v).map(|(a, b)| a + s * h * b).collect();
        grad(&xs)
    };
    let (p2, p1, m1, m2) = (at(2.0), at(1.0), at(-1.0), at(-2.0));
    (0..x.len())
        .map(|i| (-(p2[i] - m2[i]) + 8.0 * (p1[i] - m1[i])) / (12.0 * h))
        .collect()
}

/// Asserts |got − want| ≤ rtol·scale + atol elementwise, `scale` per
/// element (the magnitude of what the product sums).
#[track_caller]
fn assert_near(what: &str, got: &[f32], want: &[f64], scale: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let allowed = rtol * s + atol;
        assert!(
            (g as f64 - w).abs() <= allowed,
            "{what}: element {i}: got {g}, want {w} (allowed {allowed:e})"
        );
    }
}

/// ½xᵀAx + bᵀx with A = MᵀM + I (symmetric): H·v = A·v for every v.
#[test]
fn a_quadratic_gives_a_times_v() {
    let n = 24;
    let mut r = rng(seed_of("quadratic"));
    let m = sample(&mut r, n * n, Dist::Uniform(-0.5, 0.5));
    let mut a = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n)
                .map(|k| m[k * n + i] as f64 * m[k * n + j] as f64)
                .sum::<f64>()
                + if i == j { 1.0 } else { 0.0 };
        }
    }
    let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    let at = tensor(&a32, &[n, n]);
    let x = tensor(&sample(&mut r, n, Dist::Uniform(-1.0, 1.0)), &[n, 1]).requires_grad();
    let b = tensor(&sample(&mut r, n, Dist::Uniform(-1.0, 1.0)), &[n, 1]);
    let ax = ok(at.matmul(&x));
    let loss =
        ok(ok(ok(ok(x.mul(&ax)).sum_all()).mul_scalar(0.5)).add(&ok(ok(b.mul(&x)).sum_all())));
    let k = 5;
    let v = sample(&mut r, k * n, COTANGENT);
    let vt = tensor(&v, &[k, n, 1]);
    let hv = read(&ok(pullback::hvp_batched(&loss, &[&x], &[&vt]))[0]);
    for row in 0..k {
        let vr: Vec<f64> = to_f64(&v[row * n..(row + 1) * n]);
        let want: Vec<f64> = (0..n)
            .map(|i| dot(&to_f64(&a32[i * n..(i + 1) * n]), &vr).0)
            .collect();
        let scale: Vec<f64> = (0..n)
            .map(|i| dot(&to_f64(&a32[i * n..(i + 1) * n]), &vr).1)
            .collect();
        // A·v through two f32 GEMMs (A·ẋ, Aᵀ·x̄'s tangent) of 24 terms.
        assert_near(
            &format!("quadratic row {row}"),
            &hv[row * n..(row + 1) * n],
            &want,
            &scale,
            1e-5,
            1e-7,
        );
    }
}

/// A unary op: f, f' in f64, and the GPU op.
type Unary = (
    &'static str,
    fn(f64) -> f64,
    fn(f64) -> f64,
    fn(&Tensor) -> pullback::Result<Tensor>,
    Dist,
);

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
fn phi(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}
fn big_phi(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}
fn gelu_tanh(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}
fn gelu_tanh_d(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let t = (c * (x + 0.044715 * x * x * x)).tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)
}

const ELU_ALPHA: f32 = 0.7;

fn unary_ops() -> Vec<Unary> {
    let pos = Dist::Uniform(0.3, 2.0);
    let any = Dist::Signed(0.1, 2.0);
    vec![
        ("exp", f64::exp, f64::exp, |x| x.exp(), any),
        ("log", f64::ln, |x| 1.0 / x, |x| x.log(), pos),
        ("sin", f64::sin, f64::cos, |x| x.sin(), any),
        ("cos", f64::cos, |x| -x.sin(), |x| x.cos(), any),
        (
            "tanh",
            f64::tanh,
            |x| 1.0 - x.tanh().powi(2),
            |x| x.tanh(),
            any,
        ),
        (
            "sigmoid",
            sigmoid,
            |x| sigmoid(x) * (1.0 - sigmoid(x)),
            |x| x.sigmoid(),
            any,
        ),
        ("sqrt", f64::sqrt, |x| 0.5 / x.sqrt(), |x| x.sqrt(), pos),
        ("square", |x| x * x, |x| 2.0 * x, |x| x.square(), any),
        (
            "powf 2.5",
            |x| x.powf(2.5),
            |x| 2.5 * x.powf(1.5),
            |x| x.powf(2.5),
            pos,
        ),
        (
            "gelu",
            |x| x * big_phi(x),
            |x| big_phi(x) + x * phi(x),
            |x| x.gelu(),
            any,
        ),
        ("gelu_tanh", gelu_tanh, gelu_tanh_d, |x| x.gelu_tanh(), any),
        (
            "silu",
            |x| x * sigmoid(x),
            |x| sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x))),
            |x| x.silu(),
            any,
        ),
        (
            "softplus",
            |x| x.exp().ln_1p(),
            sigmoid,
            |x| x.softplus(),
            any,
        ),
        ("log1p", f64::ln_1p, |x| 1.0 / (1.0 + x), |x| x.log1p(), pos),
        ("expm1", f64::exp_m1, f64::exp, |x| x.expm1(), any),
        (
            "rsqrt",
            |x| 1.0 / x.sqrt(),
            |x| -0.5 * x.powf(-1.5),
            |x| x.rsqrt(),
            pos,
        ),
        (
            "elu",
            |x| {
                if x > 0.0 {
                    x
                } else {
                    ELU_ALPHA as f64 * x.exp_m1()
                }
            },
            |x| {
                if x > 0.0 {
                    1.0
                } else {
                    ELU_ALPHA as f64 * x.exp()
                }
            },
            |x| x.elu(ELU_ALPHA),
            any,
        ),
        // Piecewise linear: no curvature, H·v = 0.
        (
            "relu",
            |x| x.max(0.0),
            |x| if x > 0.0 { 1.0 } else { 0.0 },
            |x| x.relu(),
            any,
        ),
        ("abs", f64::abs, f64::signum, |x| x.abs(), any),
    ]
}

/// Σ u ⊙ f(x): H = diag(u·f''(x)), checked against the f64 central
/// difference of the analytic gradient u·f'(x). The GPU's f'' is computed
/// from the saved f32 value, so it may differ from f64 by the op's own
/// accuracy (a few 1e-6 relative for the transcendental functions, as
/// their first derivatives do) plus the f32 rounding of the input: 2e-5
/// relative to |u·f''(x)·v| + 1e-6 absolute.
#[test]
fn every_unary_op_s_curvature() {
    let n = 37;
    for (name, f, df, gpu, dist) in unary_ops() {
        let mut r = rng(seed_of(&format!("unary hvp {name}")));
        let x = sample(&mut r, n, dist);
        let u = sample(&mut r, n, COTANGENT);
        let v = sample(&mut r, n, COTANGENT);
        let xt = tensor(&x, &[n]).requires_grad();
        let loss = ok(ok(ok(gpu(&xt)).mul(&tensor(&u, &[n]))).sum_all());
        let hv = read(&ok(pullback::hvp(&loss, &[&xt], &[&tensor(&v, &[n])]))[0]);
        let (u64_, v64) = (to_f64(&u), to_f64(&v));
        let grad =
            |xs: &[f64]| -> Vec<f64> { xs.iter().zip(&u64_).map(|(&a, &w)| w * df(a)).collect() };
        let want = fd_hvp(&grad, &to_f64(&x), &v64);
        let scale: Vec<f64> = want.iter().map(|w| w.abs()).collect();
        assert_near(&format!("hvp of {name}"), &hv, &want, &scale, 2e-5, 1e-6);
        // The forward itself, so that the table's f' belongs to its f.
        let y = read(&ok(gpu(&xt)));
        for (i, (&g, &a)) in y.iter().zip(&x).enumerate() {
            let w = f(a as f64);
            assert!(
                (g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{name}({a}) = {g}, want {w} at {i}"
            );
        }
    }
}

/// Σ u ⊙ (a op b) for mul, div and pow, b broadcast from [c] to [r, c]:
/// the blocks ∂²/∂a², ∂²/∂a∂b, ∂²/∂b² against the f64 central difference
/// of the analytic gradient (summed over the broadcast axis for b); 3e-5
/// relative to |H·v| + 1e-3 (pow's a^b·ln a is evaluated in f32 through
/// exp2 and log2, a few ULP each), b's five-term sums included.
#[test]
fn mul_div_and_pow_curvature_with_broadcasting() {
    let (rows, cols) = (5, 8);
    type Binary = (
        &'static str,
        fn(f64, f64) -> (f64, f64),
        fn(&Tensor, &Tensor) -> pullback::Result<Tensor>,
    );
    let ops: Vec<Binary> = vec![
        ("mul", |a, b| (b, a), |a, b| a.mul(b)),
        ("div", |a, b| (1.0 / b, -a / (b * b)), |a, b| a.div(b)),
        (
            "pow",
            |a, b| (b * a.powf(b - 1.0), a.powf(b) * a.ln()),
            |a, b| a.pow(b),
        ),
    ];
    for (name, d, gpu) in ops {
        let mut r = rng(seed_of(&format!("binary hvp {name}")));
        let a = sample(&mut r, rows * cols, Dist::Uniform(0.5, 2.0));
        let b = sample(&mut r, cols, Dist::Uniform(0.5, 2.0));
        let u = sample(&mut r, rows * cols, COTANGENT);
        let (va, vb) = (
            sample(&mut r, rows * cols, COTANGENT),
            sample(&mut r, cols, COTANGENT),
        );
        let at = tensor(&a, &[rows, cols]).requires_grad();
        let bt = tensor(&b, &[cols]).requires_grad();
        let loss = ok(ok(ok(gpu(&at, &bt)).mul(&tensor(&u, &[rows, cols]))).sum_all());
        let hv = ok(pullback::hvp(
            &loss,
            &[&at, &bt],
            &[&tensor(&va, &[rows, cols]), &tensor(&vb, &[cols])],
        ));
        // The gradient of (a, b) stacked, in f64.
        let u64_ = to_f64(&u);
        let grad = |xs: &[f64]| -> Vec<f64> {
            let (a, b) = xs.split_at(rows * cols);
            let mut ga = vec![0.0; rows * cols];
            let mut gb = vec![0.0; cols];
            for i in 0..rows * cols {
                let (da, db) = d(a[i], b[i % cols]);
                ga[i] = u64_[i] * da;
                gb[i % cols] += u64_[i] * db;
            }
            [ga, gb].concat()
        };
        let x = [to_f64(&a), to_f64(&b)].concat();
        let v = [to_f64(&va), to_f64(&vb)].concat();
        let want = fd_hvp(&grad, &x, &v);
        let got = [read(&hv[0]), read(&hv[1])].concat();
        let scale: Vec<f64> = want.iter().map(|w| w.abs() + 1e-3).collect();
        assert_near(&format!("hvp of {name}"), &got, &want, &scale, 3e-5, 1e-6);
    }
}

/// Σ U ⊙ (A·B): H·(Va, Vb) = (U·Vbᵀ, Vaᵀ·U) exactly (the cross terms of a
/// product; no other second derivative).
#[test]
fn matmul_cross_terms() {
    let (m, p, n) = (6, 5, 7);
    let mut r = rng(seed_of("matmul hvp"));
    let a = sample(&mut r, m * p, Dist::Uniform(-1.0, 1.0));
    let b = sample(&mut r, p * n, Dist::Uniform(-1.0, 1.0));
    let u = sample(&mut r, m * n, COTANGENT);
    let va = sample(&mut r, m * p, COTANGENT);
    let vb = sample(&mut r, p * n, COTANGENT);
    let at = tensor(&a, &[m, p]).requires_grad();
    let bt = tensor(&b, &[p, n]).requires_grad();
    let loss = ok(ok(ok(at.matmul(&bt)).mul(&tensor(&u, &[m, n]))).sum_all());
    let hv = ok(pullback::hvp(
        &loss,
        &[&at, &bt],
        &[&tensor(&va, &[m, p]), &tensor(&vb, &[p, n])],
    ));
    let (u, va, vb) = (to_f64(&u), to_f64(&va), to_f64(&vb));
    // (U·Vbᵀ)[i, k] = Σ_j U[i, j]·Vb[k, j]; (Vaᵀ·U)[k, j] = Σ_i Va[i, k]·U[i, j].
    let mut want_a = vec![(0.0, 0.0); m * p];
    for i in 0..m {
        for k in 0..p {
            let terms = (0..n).map(|j| u[i * n + j] * vb[k * n + j]);
            want_a[i * p + k] = terms.fold((0.0, 0.0), |(s, g), t| (s + t, g + t.abs()));
        }
    }
    let mut want_b = vec![(0.0, 0.0); p * n];
    for k in 0..p {
        for j in 0..n {
            let terms = (0..m).map(|i| va[i * p + k] * u[i * n + j]);
            want_b[k * n + j] = terms.fold((0.0, 0.0), |(s, g), t| (s + t, g + t.abs()));
        }
    }
    for (what, got, want) in [("A", read(&hv[0]), want_a), ("B", read(&hv[1]), want_b)] {
        let (w, s): (Vec<f64>, Vec<f64>) = want.into_iter().unzip();
        // A GEMM of at most 7 terms in f32.
        assert_near(&format!("matmul hvp of {what}"), &got, &w, &s, 2e-6, 1e-7);
    }
}

/// The MLP of the tests: h = tanh(X·W1 + b1), z = h·W2 + b2, loss = the
/// mean over the batch of cross_entropy(z, labels). Its parameters
/// stacked flat: W1 [d, hd], b1 [hd], W2 [hd, c], b2 [c].
struct Mlp {
    b: usize,
    d: usize,
    hd: usize,
    c: usize,
    x: Vec<f32>,
    labels: Vec<u32>,
}

impl Mlp {
    fn new(name: &str, (b, d, hd, c): (usize, usize, usize, usize)) -> (Mlp, Vec<f32>) {
        let mut r = rng(seed_of(name));
        let x = sample(&mut r, b * d, Dist::Uniform(-1.0, 1.0));
        let labels = (0..b).map(|i| (i * 7 % c) as u32).collect();
        let params = sample(&mut r, d * hd + hd + hd * c + c, Dist::Uniform(-0.5, 0.5));
        (
            Mlp {
                b,
                d,
                hd,
                c,
                x,
                labels,
            },
            params,
        )
    }

    fn shapes(&self) -> [Vec<usize>; 4] {
        [
            vec![self.d, self.hd],
            vec![self.hd],
            vec![self.hd, self.c],
            vec![self.c],
        ]
    }

    /// The parameters as tracked tensors, and the loss on the GPU.
    fn gpu(&self, params: &[f32]) -> (Vec<Tensor>, Tensor) {
        let mut at = 0;
        let ps: Vec<Tensor> = (self.shapes().iter())
            .map(|s| {
                let len = numel(s);
                at += len;
                tensor(&params[at - len..at], s).requires_grad()
            })
            .collect();
        let x = tensor(&self.x, &[self.b, self.d]);
        let h = ok(ok(ok(x.matmul(&ps[0])).add(&ps[1])).tanh());
        let z = ok(ok(h.matmul(&ps[2])).add(&ps[3]));
        let loss = ok(ok(z.cross_entropy(&self.labels)).mean(&[0], false));
        (ps, loss)
    }

    /// The gradient of the loss in f64, by hand.
    fn grad(&self, w: &[f64]) -> Vec<f64> {
        let (b, d, hd, c) = (self.b, self.d, self.hd, self.c);
        let (w1, rest) = w.split_at(d * hd);
        let (b1, rest) = rest.split_at(hd);
        let (w2, b2) = rest.split_at(hd * c);
        let x = to_f64(&self.x);
        let mut g = vec![0.0; w.len()];
        for n in 0..b {
            let h: Vec<f64> = (0..hd)
                .map(|j| {
                    ((0..d).map(|i| x[n * d + i] * w1[i * hd + j]).sum::<f64>() + b1[j]).tanh()
                })
                .collect();
            let z: Vec<f64> = (0..c)
                .map(|k| (0..hd).map(|j| h[j] * w2[j * c + k]).sum::<f64>() + b2[k])
                .collect();
            let m = z.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            // d loss / dz = (softmax − onehot) / B.
            let dz: Vec<f64> = (0..c)
                .map(|k| (e[k] / s - f64::from(u8::from(self.labels[n] as usize == k))) / b as f64)
                .collect();
            let dh: Vec<f64> = (0..hd)
                .map(|j| (0..c).map(|k| dz[k] * w2[j * c + k]).sum::<f64>() * (1.0 - h[j] * h[j]))
                .collect();
            for i in 0..d {
                for j in 0..hd {
                    g[i * hd + j] += x[n * d + i] * dh[j];
                }
            }
            for j in 0..hd {
                g[d * hd + j] += dh[j];
                for k in 0..c {
                    g[d * hd + hd + j * c + k] += h[j] * dz[k];
                }
            }
            for k in 0..c {
                g[d * hd + hd + hd * c + k] += dz[k];
            }
        }
        g
    }
}

/// The MLP's H·v against the f64 central difference of its f64 gradient,
/// for K directions at once. f32 forward values carry ~1e-7 relative
/// error through tanh and softmax; a second-order sweep of ~20 ops keeps
/// H·v within 1e-4 of its largest element.
#[test]
fn an_mlp_s_hvp_matches_float64() {
    mlp_hvp_matches_float64("mlp hvp", (8, 5, 6, 3));
}

/// The same with a classifier head of 3 classes on 24 hidden units, the
/// shapes real models have: the head's curvature terms are narrow batched
/// products (computed transposed, the batch folded into the columns) and
/// the hidden bias's tangent rows are read at their own shape.
#[test]
fn an_mlp_with_a_narrow_head_s_hvp_matches_float64() {
    mlp_hvp_matches_float64("mlp hvp narrow head", (16, 8, 24, 3));
}

/// With 64 hidden units the K = 4 directions fold into 256 columns, which
/// CPU adapters compute four columns per invocation: the head's curvature
/// term Ḣᵀ·G transposed (3 rows, stored as columns) and X·Ẇ1 (a
/// contraction of 8).
#[test]
fn an_mlp_with_a_wide_hidden_layer_s_hvp_matches_float64() {
    mlp_hvp_matches_float64("mlp hvp wide hidden layer", (16, 8, 64, 3));
}

fn mlp_hvp_matches_float64(name: &str, dims: (usize, usize, usize, usize)) {
    let (mlp, params) = Mlp::new(name, dims);
    let (ps, loss) = mlp.gpu(&params);
    let refs: Vec<&Tensor> = ps.iter().collect();
    let k = 4;
    let mut r = rng(seed_of(&format!("{name} directions")));
    let total = params.len();
    let v = sample(&mut r, k * total, COTANGENT);
    // Direction rows per parameter: [K, *shape].
    let mut dirs = Vec::new();
    let mut at = 0;
    for s in mlp.shapes() {
        let len = numel(&s);
        let data: Vec<f32> = (0..k)
            .flat_map(|row| v[row * total + at..row * total + at + len].to_vec())
            .collect();
        dirs.push(tensor(&data, &[&[k][..], &s].concat()));
        at += len;
    }
    let dir_refs: Vec<&Tensor> = dirs.iter().collect();
    let hv = ok(pullback::hvp_batched(&loss, &refs, &dir_refs));
    let got: Vec<Vec<f32>> = hv.iter().map(read).collect();
    let grad = |w: &[f64]| mlp.grad(w);
    for row in 0..k {
        let want = fd_hvp(
            &grad,
            &to_f64(&params),
            &to_f64(&v[row * total..(row + 1) * total]),
        );
        let mut flat = Vec::new();
        for (g, s) in got.iter().zip(mlp.shapes()) {
            let len = numel(&s);
            flat.extend_from_slice(&g[row * len..(row + 1) * len]);
        }
        let largest = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        let scale = vec![largest; want.len()];
        assert_near(
            &format!("MLP H·v row {row}"),
            &flat,
            &want,
            &scale,
            1e-4,
            1e-7,
        );
    }
}

/// The MLP's whole Hessian from `hvp_batched` with the identity as
/// directions (one row per parameter) is symmetric to f32 rounding.
#[test]
fn the_hessian_from_identity_directions_is_symmetric() {
    let (mlp, params) = Mlp::new("mlp hessian", (6, 3, 4, 2));
    let (ps, loss) = mlp.gpu(&params);
    let refs: Vec<&Tensor> = ps.iter().collect();
    let total = params.len();
    let mut dirs = Vec::new();
    let mut at = 0;
    for s in mlp.shapes() {
        let len = numel(&s);
        let mut data = vec![0.0f32; total * len];
        for i in 0..len {
            data[(at + i) * len + i] = 1.0;
        }
        dirs.push(tensor(&data, &[&[total][..], &s].concat()));
        at += len;
    }
    let dir_refs: Vec<&Tensor> = dirs.iter().collect();
    let hv = ok(pullback::hvp_batched(&loss, &refs, &dir_refs));
    let got: Vec<Vec<f32>> = hv.iter().map(read).collect();
    // Row i of H: direction i's products, parameters concatenated.
    let mut h = vec![0.0f64; total * total];
    for i in 0..total {
        let mut col = 0;
        for (g, s) in got.iter().zip(mlp.shapes()) {
            let len = numel(&s);
            for e in 0..len {
                h[i * total + col + e] = g[i * len + e] as f64;
            }
            col += len;
        }
    }
    let largest = h.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(largest > 1e-3, "the Hessian is not all zeros: {largest}");
    for i in 0..total {
        for j in 0..i {
            let (a, b) = (h[i * total + j], h[j * total + i]);
            assert!(
                (a - b).abs() <= 1e-5 * largest,
                "H[{i}, {j}] = {a} but H[{j}, {i}] = {b} (largest element {largest})"
            );
        }
    }
    // And each row matches the f64 difference of the gradient.
    let grad = |w: &[f64]| mlp.grad(w);
    for i in [0, total / 2, total - 1] {
        let mut e = vec![0.0; total];
        e[i] = 1.0;
        let want = fd_hvp(&grad, &to_f64(&params), &e);
        let row: Vec<f32> = h[i * total..(i + 1) * total]
            .iter()
            .map(|&x| x as f32)
            .collect();
        assert_near(
            &format!("Hessian row {i}"),
            &row,
            &want,
            &vec![largest; total],
            1e-4,
            1e-7,
        );
    }
}

/// `hvp_batched` over K directions equals K single `hvp` calls, and the
/// result does not depend on fused adjoints (second order fuses nothing;
/// the setting must not change it).
#[test]
fn batched_equals_a_loop_and_fusion_does_not_matter() {
    let (mlp, params) = Mlp::new("mlp hvp loop", (16, 8, 12, 4));
    let (ps, loss) = mlp.gpu(&params);
    let refs: Vec<&Tensor> = ps.iter().collect();
    let k = 3;
    let mut r = rng(seed_of("hvp loop directions"));
    let rows: Vec<Vec<Vec<f32>>> = (0..k)
        .map(|_| {
            mlp.shapes()
                .iter()
                .map(|s| sample(&mut r, numel(s), COTANGENT))
                .collect()
        })
        .collect();
    let batched: Vec<Tensor> = (0..4)
        .map(|i| {
            let data: Vec<f32> = rows.iter().flat_map(|row| row[i].clone()).collect();
            tensor(&data, &[&[k][..], &mlp.shapes()[i]].concat())
        })
        .collect();
    let b_refs: Vec<&Tensor> = batched.iter().collect();
    let all = ok(pullback::hvp_batched(&loss, &refs, &b_refs));
    let all: Vec<Vec<f32>> = all.iter().map(read).collect();
    for (row, dirs) in rows.iter().enumerate() {
        let ts: Vec<Tensor> = dirs
            .iter()
            .zip(mlp.shapes())
            .map(|(d, s)| tensor(d, &s))
            .collect();
        let t_refs: Vec<&Tensor> = ts.iter().collect();
        let single = ok(pullback::hvp(&loss, &refs, &t_refs));
        for (i, s) in single.iter().enumerate() {
            let len = numel(&mlp.shapes()[i]);
            assert_eq!(
                read(s),
                all[i][row * len..(row + 1) * len].to_vec(),
                "row {row}, parameter {i}"
            );
        }
    }
    for fused in [false, true] {
        dev().set_fused_adjoints(fused);
        let again = ok(pullback::hvp_batched(&loss, &refs, &b_refs));
        for (a, b) in again.iter().zip(&all) {
            assert_eq!(&read(a), b, "fused adjoints {fused}");
        }
    }
}

/// The errors say what to do, and the device stays usable.
#[test]
fn errors() {
    let x = tensor(&[0.5, 1.5, -1.0], &[3]).requires_grad();
    let y = ok(x.square());
    let v = tensor(&[1.0, 1.0, 1.0], &[3]);
    expect_err(pullback::hvp(&y, &[&x], &[&v]), &["one-element", "sum"]);
    let loss = ok(y.sum_all());
    let e = expect_err(
        pullback::hvp(&loss, &[&x], &[&tensor(&[1.0, 2.0], &[2])]),
        &["shape", "[3]"],
    );
    assert!(matches!(e, Error::TangentShape { index: 0, .. }), "{e:?}");
    let e = expect_err(
        pullback::hvp(&loss, &[&x], &[&v, &v]),
        &["2 tangents", "1 input"],
    );
    assert!(
        matches!(
            e,
            Error::TangentCount {
                inputs: 1,
                tangents: 2
            }
        ),
        "{e:?}"
    );
    let e = expect_err(
        pullback::hvp_batched(&loss, &[&x], &[&v]),
        &["[K, *input.shape]"],
    );
    assert!(matches!(e, Error::TangentShape { .. }), "{e:?}");
    let plain = tensor(&[1.0, 2.0, 3.0], &[3]);
    let e = expect_err(
        pullback::hvp(&loss, &[&plain], &[&v]),
        &["parameter 0 of hvp"],
    );
    assert!(matches!(e, Error::NotTracked { .. }), "{e:?}");
    let other = fresh_device();
    let w = ok(other.tensor(&[1.0, 1.0, 1.0], &[3]));
    let e = expect_err(pullback::hvp(&loss, &[&x], &[&w]), &["device"]);
    assert!(matches!(e, Error::DeviceMismatch), "{e:?}");
    assert_usable(dev());
    // x² summed: H = 2I.
    assert_eq!(
        read(&ok(pullback::hvp(&loss, &[&x], &[&v]))[0]),
        vec![2.0, 2.0, 2.0]
    );
}
