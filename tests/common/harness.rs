//! The VJP check harness [`VjpCheck`].
//!
//! The harness checks one op (or any composition of ops) against an f64
//! reference, in four stages:
//!
//! - (a) the GPU forward against the f64 reference forward;
//! - (b) the analytic f64 reference VJP against a central finite-difference
//!   VJP of the f64 reference forward (this validates the reference itself);
//! - (c) `pullback::vjp` on the GPU against the reference VJP;
//! - (d) `pullback::vjp_batched` with K cotangents against a loop of K single
//!   `vjp` calls, and row by row against the reference, for K in {1, 3, 64};
//! - (e) forward mode: `pullback::jvp` against the reference J·t,
//!   `jvp_batched` against a loop of `jvp`, and ⟨u, J·t⟩ = ⟨Jᵀ·u, t⟩
//!   (`tangents.rs`).
//!
//! The reference sees exactly the f32 inputs and cotangents the GPU sees
//! (converted to f64), so every difference is the GPU's rounding.

use pullback::Tensor;
use rand::rngs::StdRng;

use super::*;

// ---------------------------------------------------------------------------
// The VJP check harness
// ---------------------------------------------------------------------------

/// Everything a [`VjpCheck::run`] measured, stage by stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// (a) GPU forward vs f64 reference.
    pub forward: ErrStats,
    /// (b) analytic reference VJP vs finite differences (f64 only).
    pub fd: ErrStats,
    /// (c) GPU `vjp` vs reference VJP.
    pub vjp: ErrStats,
    /// (d) GPU `vjp_batched` rows vs reference VJP, all K.
    pub batched: ErrStats,
    /// (d) `vjp_batched` vs a loop of single `vjp` calls, all K.
    pub batched_vs_loop: ErrStats,
    /// (e) forward mode.
    pub tangents: TangentReport,
}

impl Report {
    /// The worse of two reports, stage by stage (for a family of checks).
    pub fn merge(self, o: Report) -> Report {
        Report {
            forward: self.forward.merge(o.forward),
            fd: self.fd.merge(o.fd),
            vjp: self.vjp.merge(o.vjp),
            batched: self.batched.merge(o.batched),
            batched_vs_loop: self.batched_vs_loop.merge(o.batched_vs_loop),
            tangents: TangentReport {
                jvp: self.tangents.jvp.merge(o.tangents.jvp),
                batched_vs_loop: (self.tangents.batched_vs_loop).merge(o.tangents.batched_vs_loop),
                dot_ratio: self.tangents.dot_ratio.max(o.tangents.dot_ratio),
            },
        }
    }

    /// Prints the report (shown by `cargo test -- --nocapture`, or on failure).
    pub fn print(&self, name: &str) {
        eprintln!(
            "[vjp-check] {name}\n  (a) forward: {}\n  (b) fd: {}\n  (c) vjp: {}\n  \
             (d) batched: {}\n  (d) batched vs loop: {}\n  (e) jvp: {}\n  \
             (e) jvp batched vs loop: {}\n  (e) dot-product ratio: {:.3}",
            self.forward,
            self.fd,
            self.vjp,
            self.batched,
            self.batched_vs_loop,
            self.tangents.jvp,
            self.tangents.batched_vs_loop,
            self.tangents.dot_ratio
        );
    }
}

/// A check of one op (or composition) against its f64 reference; see the
/// module documentation for the stages. Build with [`VjpCheck::new`], add
/// inputs and the output shape, set tolerances, then [`VjpCheck::run`].
pub struct VjpCheck {
    name: String,
    rng: StdRng,
    inputs: Vec<(Vec<usize>, Vec<f32>)>,
    out_shape: Option<Vec<usize>>,
    forward_tol: Tol,
    vjp_tol: Tol,
    loop_tol: Tol,
    fd_tol: Tol,
    fd_max_per_input: usize,
    batch_sizes: Vec<usize>,
}

impl VjpCheck {
    /// A check named `name` (used in messages and to seed its random values).
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        VjpCheck {
            rng: rng(seed_of(&name)),
            name,
            inputs: Vec::new(),
            out_shape: None,
            forward_tol: Tol::ARITH,
            vjp_tol: Tol::ARITH,
            loop_tol: Tol::new(0.0, 0.0),
            fd_tol: Tol::FD,
            fd_max_per_input: 256,
            batch_sizes: vec![1, 3, 64],
        }
    }

    /// An input of `shape` with values drawn from `dist` (seeded by the name).
    pub fn input(mut self, shape: &[usize], dist: Dist) -> Self {
        let data = sample(&mut self.rng, numel(shape), dist);
        self.inputs.push((shape.to_vec(), data));
        self
    }

    /// An input with given values.
    pub fn input_data(mut self, shape: &[usize], data: Vec<f32>) -> Self {
        assert_eq!(numel(shape), data.len(), "test bug: data for {shape:?}");
        self.inputs.push((shape.to_vec(), data));
        self
    }

    /// The output's shape (required).
    pub fn output(mut self, shape: &[usize]) -> Self {
        self.out_shape = Some(shape.to_vec());
        self
    }

    /// Tolerance of the GPU forward against the reference.
    pub fn forward_tol(mut self, tol: Tol) -> Self {
        self.forward_tol = tol;
        self
    }

    /// Tolerance of GPU gradients (single and batched) against the reference.
    pub fn vjp_tol(mut self, tol: Tol) -> Self {
        self.vjp_tol = tol;
        self
    }

    /// Tolerance of `vjp_batched` rows against single `vjp` calls. Default:
    /// exact (0, 0): a batched adjoint kernel does per row what the single
    /// one does. Ops whose adjoint picks a different reduction strategy for
    /// different K may need a few ULP here; say why where you set it.
    pub fn loop_tol(mut self, tol: Tol) -> Self {
        self.loop_tol = tol;
        self
    }

    /// Tolerance of the reference VJP against finite differences.
    pub fn fd_tol(mut self, tol: Tol) -> Self {
        self.fd_tol = tol;
        self
    }

    /// At most this many finite-difference elements per input (default 256).
    pub fn fd_max_per_input(mut self, n: usize) -> Self {
        self.fd_max_per_input = n;
        self
    }

    /// The K values of stage (d) (default 1, 3, 64).
    pub fn batch_sizes(mut self, ks: &[usize]) -> Self {
        self.batch_sizes = ks.to_vec();
        self
    }

    /// Runs stages (a) to (d); panics with the worst error on failure and
    /// returns the measurements.
    ///
    /// `gpu` computes the output from tracked leaves of the inputs' shapes;
    /// `forward` is the f64 reference of the same function (flat row-major
    /// inputs, flat output); `vjp` is the analytic f64 VJP: given the inputs
    /// and one cotangent of the output's shape, one gradient per input.
    #[track_caller]
    pub fn run(
        mut self,
        gpu: impl Fn(&[Tensor]) -> pullback::Result<Tensor>,
        forward: impl Fn(&[Vec<f64>]) -> Vec<f64>,
        vjp: impl Fn(&[Vec<f64>], &[f64]) -> Vec<Vec<f64>>,
    ) -> Report {
        let name = self.name.clone();
        let out_shape = self
            .out_shape
            .clone()
            .unwrap_or_else(|| panic!("{name}: test bug: no .output(shape)"));
        let n_out = numel(&out_shape);
        let d = dev();
        let mut report = Report::default();

        let xs: Vec<Tensor> = self
            .inputs
            .iter()
            .map(|(shape, data)| ok(d.tensor(data, shape)).requires_grad())
            .collect();
        let x64: Vec<Vec<f64>> = self.inputs.iter().map(|(_, v)| to_f64(v)).collect();
        let x_refs: Vec<&Tensor> = xs.iter().collect();

        // (a) forward.
        let y = gpu(&xs).unwrap_or_else(|e| panic!("{name}: GPU forward failed: {e}"));
        assert_eq!(y.shape(), out_shape.as_slice(), "{name}: output shape");
        let want_y = forward(&x64);
        assert_eq!(want_y.len(), n_out, "{name}: test bug: reference length");
        report.forward = assert_close_f32(
            &format!("{name}: (a) forward"),
            &read(&y),
            &want_y,
            &out_shape,
            self.forward_tol,
        );

        // (b) reference VJP vs finite differences, with one cotangent.
        let v = sample(&mut self.rng, n_out, COTANGENT);
        let v64 = to_f64(&v);
        let want_g = vjp(&x64, &v64);
        assert_eq!(want_g.len(), xs.len(), "{name}: test bug: reference vjp");
        let fd = finite_difference_vjp(&forward, &x64, &v64, self.fd_max_per_input);
        for (i, (indices, fd_values)) in fd.iter().enumerate() {
            assert_eq!(want_g[i].len(), x64[i].len(), "{name}: test bug: grad {i}");
            let analytic: Vec<f64> = indices.iter().map(|&j| want_g[i][j]).collect();
            let s = assert_close(
                &format!(
                    "{name}: (b) reference VJP of input {i} vs finite differences \
                     (index = position among the {} checked elements)",
                    indices.len()
                ),
                &analytic,
                fd_values,
                &[indices.len()],
                self.fd_tol,
            );
            report.fd = report.fd.merge(s);
        }

        // (c) GPU vjp vs reference.
        let vt = ok(d.tensor(&v, &out_shape));
        let grads = pullback::vjp(&[&y], &[&vt], &x_refs)
            .unwrap_or_else(|e| panic!("{name}: vjp failed: {e}"));
        assert_eq!(grads.len(), xs.len(), "{name}: vjp result count");
        for (i, g) in grads.iter().enumerate() {
            let shape = &self.inputs[i].0;
            assert_eq!(g.shape(), shape.as_slice(), "{name}: vjp grad {i} shape");
            let s = assert_close_f32(
                &format!("{name}: (c) vjp, gradient of input {i}"),
                &read(g),
                &want_g[i],
                shape,
                self.vjp_tol,
            );
            report.vjp = report.vjp.merge(s);
        }

        // (d) vjp_batched for each K vs a loop of single vjp calls and vs the
        // reference, row by row. The rows of smaller K are the first rows of
        // the largest K's cotangents, so one loop of single calls serves all.
        let k_max = self.batch_sizes.iter().copied().max().unwrap_or(0);
        let rows: Vec<Vec<f32>> = (0..k_max)
            .map(|_| sample(&mut self.rng, n_out, COTANGENT))
            .collect();
        let singles: Vec<Vec<Vec<f32>>> = rows
            .iter()
            .map(|row| {
                let vt = ok(d.tensor(row, &out_shape));
                let gs = pullback::vjp(&[&y], &[&vt], &x_refs)
                    .unwrap_or_else(|e| panic!("{name}: vjp failed: {e}"));
                gs.iter().map(read).collect()
            })
            .collect();
        let want_rows: Vec<Vec<Vec<f64>>> = rows.iter().map(|r| vjp(&x64, &to_f64(r))).collect();
        for &k in &self.batch_sizes {
            let stacked: Vec<f32> = rows[..k].concat();
            let batch_shape = [&[k][..], &out_shape].concat();
            let vt = ok(d.tensor(&stacked, &batch_shape));
            let grads = pullback::vjp_batched(&[&y], &[&vt], &x_refs)
                .unwrap_or_else(|e| panic!("{name}: vjp_batched (K={k}) failed: {e}"));
            assert_eq!(grads.len(), xs.len(), "{name}: vjp_batched result count");
            for (i, g) in grads.iter().enumerate() {
                let shape = &self.inputs[i].0;
                let m = numel(shape);
                let want_shape = [&[k][..], shape].concat();
                assert_eq!(g.shape(), want_shape.as_slice(), "{name}: K={k} grad {i}");
                let got = read(g);
                for (r, single) in singles.iter().enumerate().take(k) {
                    let row = &got[r * m..(r + 1) * m];
                    let s = assert_close_f32(
                        &format!(
                            "{name}: (d) vjp_batched K={k} row {r} of input {i} vs single vjp"
                        ),
                        row,
                        &to_f64(&single[i]),
                        shape,
                        self.loop_tol,
                    );
                    report.batched_vs_loop = report.batched_vs_loop.merge(s);
                    let s = assert_close_f32(
                        &format!("{name}: (d) vjp_batched K={k} row {r} of input {i}"),
                        row,
                        &want_rows[r][i],
                        shape,
                        self.vjp_tol,
                    );
                    report.batched = report.batched.merge(s);
                }
            }
        }
        let case = TangentCase {
            name: &name,
            y: &y,
            xs: &xs,
            shapes: self.inputs.iter().map(|(s, _)| s.clone()).collect(),
            x64: &x64,
            out_shape: &out_shape,
        };
        report.tangents = check_tangents(
            &case,
            &mut self.rng,
            &vjp,
            self.vjp_tol,
            self.loop_tol,
            &self.batch_sizes,
        );
        report.print(&name);
        report
    }
}

/// Checks an elementwise unary op over `shapes` with inputs from `dist`
/// against the f64 function `f` and its derivative `df` (all of
/// [`VjpCheck`]'s stages), and prints the family's worst errors.
#[allow(clippy::too_many_arguments)]
pub fn check_unary_family(
    name: &str,
    shapes: &[&[usize]],
    dist: Dist,
    forward_tol: Tol,
    vjp_tol: Tol,
    gpu: impl Fn(&Tensor) -> pullback::Result<Tensor>,
    f: impl Fn(f64) -> f64,
    df: impl Fn(f64) -> f64,
) {
    let mut family = Report::default();
    for shape in shapes {
        let r = VjpCheck::new(format!("{name} {shape:?}"))
            .input(shape, dist)
            .output(shape)
            .forward_tol(forward_tol)
            .vjp_tol(vjp_tol)
            .run(
                |x| gpu(&x[0]),
                |x| x[0].iter().map(|&a| f(a)).collect(),
                |x, v| vec![x[0].iter().zip(v).map(|(&a, &g)| g * df(a)).collect()],
            );
        family = family.merge(r);
    }
    family.print(&format!("family {name}"));
}
