//! `matmul` against an f64 reference: forward, the reference VJP against
//! finite differences, `vjp` and `vjp_batched` (K = 1, 3, 64; see
//! `common::VjpCheck`) for plain 2-D products, batched 3-D products, every
//! way the batch axes broadcast, non-square and odd sizes around the 64-wide
//! tiles and the contraction steps (`DEPTH`) of `shaders/matmul.wgsl`, long
//! contractions, gradients of both operands and of one (the other a
//! constant); then the shape errors.
//!
//! # Tolerance of an f32 GEMM
//!
//! `matmul.wgsl` accumulates each output element sequentially over the
//! contraction index p (`acc += a·b`, possibly fused). Each of the P steps
//! rounds once, by at most u = 2⁻²⁴ = EPS/2 times the running partial sum,
//! and every partial sum is at most Σ_p |a_ip b_pj|. The deterministic bound
//! is P·u·Σ|ab|; the rounding errors have effectively random signs, so they
//! add up like a random walk: Higham & Mary's probabilistic bound
//! λ·√P·u·Σ|ab| fails with probability at most 2·exp(-λ²/2) per element,
//! 7e-4 for λ = 4, and that is before using the fact that the partial sums
//! of random-sign products are far smaller than Σ|ab|. We therefore allow
//!
//! ```text
//! atol = 2·√P·EPS·max_ij Σ_p |a_ip b_pj|      (= λ·√P·u·S with λ = 4)
//! ```
//!
//! for the forward, and for each gradient the same with its own contraction
//! (dA = G·Bᵀ over n, dB = Aᵀ·G over m, each also summed over the batch
//! entries an operand was broadcast along, so P counts those too). The
//! cotangents have |g| <= 1 (`common::COTANGENT`), so Σ|g||b| <= Σ|b| bounds
//! the gradients' S from the inputs alone. Inputs are uniform in [-1, 1], so
//! Σ|ab| barely varies across elements and the max is a fair scale for all.
//! A real bug (a dropped tile, a wrong stride) moves an element by O(|ab|),
//! i.e. by ~S/P, which is far outside this for the sizes here. The
//! measured worst error, in units of √P·EPS·S, is printed by each check.

mod common;

use common::*;
use pullback::Error;

const EPS: f64 = f32::EPSILON as f64;

/// The f64 reference of `matmul` with NumPy batch broadcasting.
struct MatmulRef {
    m: usize,
    p: usize,
    n: usize,
    /// For each batch entry z of the output, the matrix of A (and B) it reads.
    ia: Vec<usize>,
    ib: Vec<usize>,
    a_len: usize,
    b_len: usize,
    out_shape: Vec<usize>,
}

impl MatmulRef {
    fn new(a_shape: &[usize], b_shape: &[usize]) -> Self {
        let (ra, rb) = (a_shape.len(), b_shape.len());
        let (a_batch, m, p) = (&a_shape[..ra - 2], a_shape[ra - 2], a_shape[ra - 1]);
        let (b_batch, p2, n) = (&b_shape[..rb - 2], b_shape[rb - 2], b_shape[rb - 1]);
        assert_eq!(p, p2, "test bug: inner dimensions");
        let batch = broadcast_shape(a_batch, b_batch);
        let z = numel(&batch);
        MatmulRef {
            m,
            p,
            n,
            ia: (0..z)
                .map(|z| broadcast_index(z, &batch, a_batch))
                .collect(),
            ib: (0..z)
                .map(|z| broadcast_index(z, &batch, b_batch))
                .collect(),
            a_len: numel(a_shape),
            b_len: numel(b_shape),
            out_shape: [&batch[..], &[m, n]].concat(),
        }
    }

    fn forward(&self, a: &[f64], b: &[f64]) -> Vec<f64> {
        let (m, p, n) = (self.m, self.p, self.n);
        let mut out = vec![0.0; self.ia.len() * m * n];
        for (z, (&za, &zb)) in self.ia.iter().zip(&self.ib).enumerate() {
            for i in 0..m {
                let c = &mut out[(z * m + i) * n..(z * m + i + 1) * n];
                for q in 0..p {
                    let aiq = a[(za * m + i) * p + q];
                    let brow = &b[(zb * p + q) * n..(zb * p + q + 1) * n];
                    for (cj, bj) in c.iter_mut().zip(brow) {
                        *cj += aiq * bj;
                    }
                }
            }
        }
        out
    }

    /// (dA, dB) = (G·Bᵀ, Aᵀ·G), each summed over the batch entries that
    /// read the same matrix.
    fn vjp(&self, a: &[f64], b: &[f64], g: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (m, p, n) = (self.m, self.p, self.n);
        let mut da = vec![0.0; self.a_len];
        let mut db = vec![0.0; self.b_len];
        for (z, (&za, &zb)) in self.ia.iter().zip(&self.ib).enumerate() {
            for i in 0..m {
                let grow = &g[(z * m + i) * n..(z * m + i + 1) * n];
                for q in 0..p {
                    let aiq = a[(za * m + i) * p + q];
                    let brow = &b[(zb * p + q) * n..(zb * p + q + 1) * n];
                    let mut s = 0.0;
                    for j in 0..n {
                        s += grow[j] * brow[j];
                        db[(zb * p + q) * n + j] += aiq * grow[j];
                    }
                    da[(za * m + i) * p + q] += s;
                }
            }
        }
        (da, db)
    }

    /// Contraction lengths behind one element of C, dA, dB: p; n times the
    /// batch entries sharing a matrix of A; m times those sharing one of B.
    fn lengths(&self) -> (usize, usize, usize) {
        let z = self.ia.len();
        let (mats_a, mats_b) = (
            self.a_len / (self.m * self.p),
            self.b_len / (self.p * self.n),
        );
        (self.p, self.n * z / mats_a, self.m * z / mats_b)
    }

    /// max Σ|terms| of each element of C, dA, dB (with |g| <= 1).
    fn scales(&self, a: &[f64], b: &[f64]) -> (f64, f64, f64) {
        let abs = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x.abs()).collect() };
        let (a, b) = (abs(a), abs(b));
        let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        let ones = vec![1.0; self.ia.len() * self.m * self.n];
        let (da, db) = self.vjp(&a, &b, &ones);
        (max(&self.forward(&a, &b)), max(&da), max(&db))
    }
}

/// `2·√P·EPS·S` (see the module documentation).
fn gemm_atol(len: usize, scale: f64) -> f64 {
    2.0 * (len as f64).sqrt() * EPS * scale
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Track {
    Both,
    OnlyA,
    OnlyB,
}

/// Runs the harness on `a·b` with inputs uniform in [-1, 1]; with `OnlyA`
/// (`OnlyB`) the other operand is an untracked constant inside the graph.
fn check_matmul(a_shape: &[usize], b_shape: &[usize], track: Track) -> Report {
    let name = format!("matmul {a_shape:?}x{b_shape:?} {track:?}");
    let mm = MatmulRef::new(a_shape, b_shape);
    let mut r = rng(seed_of(&format!("{name} inputs")));
    let a = sample(&mut r, numel(a_shape), Dist::Uniform(-1.0, 1.0));
    let b = sample(&mut r, numel(b_shape), Dist::Uniform(-1.0, 1.0));
    let (a64, b64) = (to_f64(&a), to_f64(&b));
    let (len_c, len_a, len_b) = mm.lengths();
    let (s_c, s_a, s_b) = mm.scales(&a64, &b64);
    let forward_atol = gemm_atol(len_c, s_c);
    let vjp_atol = match track {
        Track::Both => gemm_atol(len_a, s_a).max(gemm_atol(len_b, s_b)),
        Track::OnlyA => gemm_atol(len_a, s_a),
        Track::OnlyB => gemm_atol(len_b, s_b),
    };
    // Finite differences re-run the whole reference product four times per
    // checked element: sample fewer elements of large products.
    let macs = numel(&mm.out_shape) * mm.p;
    let fd_max = if macs > 50_000 { 12 } else { 64 };
    let mut check = VjpCheck::new(&name)
        .output(&mm.out_shape)
        .forward_tol(Tol::new(0.0, forward_atol))
        .vjp_tol(Tol::new(0.0, vjp_atol))
        .fd_max_per_input(fd_max);
    let report = match track {
        Track::Both => {
            check = check.input_data(a_shape, a).input_data(b_shape, b);
            check.run(
                |x| x[0].matmul(&x[1]),
                |x| mm.forward(&x[0], &x[1]),
                |x, g| {
                    let (da, db) = mm.vjp(&x[0], &x[1], g);
                    vec![da, db]
                },
            )
        }
        Track::OnlyA => {
            let bt = tensor(&b, b_shape);
            assert!(!bt.is_tracked());
            check = check.input_data(a_shape, a);
            check.run(
                |x| x[0].matmul(&bt),
                |x| mm.forward(&x[0], &b64),
                |x, g| vec![mm.vjp(&x[0], &b64, g).0],
            )
        }
        Track::OnlyB => {
            let at = tensor(&a, a_shape);
            check = check.input_data(b_shape, b);
            check.run(
                |x| at.matmul(&x[0]),
                |x| mm.forward(&a64, &x[0]),
                |x, g| vec![mm.vjp(&a64, &x[0], g).1],
            )
        }
    };
    // The worst errors in units of √P·EPS·S (the tolerance is 2 of them).
    let unit_c = (len_c as f64).sqrt() * EPS * s_c;
    let unit_g = vjp_atol / 2.0;
    eprintln!(
        "[matmul] {name}: P = {len_c}, forward worst {:.3} √P·EPS·S, gradients worst {:.3} \
         (vjp) / {:.3} (batched) √P·EPS·S",
        report.forward.max_abs / unit_c,
        report.vjp.max_abs / unit_g,
        report.batched.max_abs / unit_g,
    );
    report
}

fn check_all(cases: &[(&[usize], &[usize])], track: Track) {
    let mut family = Report::default();
    for (a, b) in cases {
        family = family.merge(check_matmul(a, b, track));
    }
    family.print(&format!("family matmul {track:?} {cases:?}"));
}

#[test]
fn matmul_2d_small_and_odd_sizes() {
    check_all(
        &[
            (&[1, 1], &[1, 1]),
            (&[2, 3], &[3, 4]),
            (&[17, 33], &[33, 19]),
            // A row times a column, and an outer product (P = 1).
            (&[1, 7], &[7, 1]),
            (&[5, 1], &[1, 6]),
        ],
        Track::Both,
    );
}

/// Tiles are 64×64, the contraction advances `DEPTH` (16 or 32) at a time:
/// sizes just below, at and just above them, in every dimension (17 and 65
/// are one past a multiple of both depths).
#[test]
fn matmul_2d_tile_edges() {
    check_all(
        &[
            (&[65, 64], &[64, 63]),
            (&[64, 17], &[17, 64]),
            (&[63, 65], &[65, 129]),
        ],
        Track::Both,
    );
}

/// Narrow products (N ≤ 16, M ≥ 4N): on CPU adapters computed as Cᵀ = Bᵀ·Aᵀ
/// and stored transposed; their adjoints read B's columns as vec4s
/// (dA = G·Bᵀ with N a multiple of 4).
#[test]
fn matmul_narrow_products() {
    check_all(
        &[
            (&[70, 33], &[33, 10]),
            (&[256, 64], &[64, 3]),
            (&[65, 8], &[8, 16]),
            (&[40, 7], &[7, 1]),
        ],
        Track::Both,
    );
}

/// Products of at least 2^22 multiply-adds, where the lanes kernel (CPU
/// adapters) reads operands as vec4s: A's rows in the forward, B's columns
/// in dA = G·Bᵀ, the transposed A four rows per vec4 in dB = Aᵀ·G. Row
/// counts (100, 36) end inside a workgroup's 32 rows; a batched case too.
#[test]
fn matmul_large_enough_for_vec4_reads() {
    check_all(
        &[
            (&[128, 256], &[256, 128]),
            (&[100, 260], &[260, 164]),
            (&[2, 36, 512], &[2, 512, 128]),
        ],
        Track::Both,
    );
}

#[test]
fn matmul_batched_3d() {
    check_all(
        &[(&[3, 17, 33], &[3, 33, 19]), (&[2, 5, 4], &[2, 4, 6])],
        Track::Both,
    );
}

/// Every way batch axes broadcast: a plain matrix on either side (the dB of
/// `[b,m,k]x[k,n]` contracts over b·m rows in one GEMM), size-1 batch axes
/// on both sides, and a rank-5 product.
#[test]
fn matmul_broadcast_batch() {
    check_all(
        &[
            (&[4, 5, 6], &[6, 3]),
            (&[5, 6], &[4, 6, 3]),
            (&[2, 1, 5, 6], &[3, 6, 4]),
            (&[1, 5, 6], &[3, 6, 4]),
            (&[2, 1, 3, 4, 5], &[1, 2, 1, 5, 3]),
        ],
        Track::Both,
    );
}

/// Matrix-vector products, where `gemm` folds the batch into the free
/// dimension: A the same matrix for every batch entry (K cotangents, or a
/// broadcast batch) folds into the columns, a stack of row vectors times
/// one matrix into the rows. Sizes cross the 64-wide tiles; K = 64 makes
/// dB of `W·x` one GEMM with 64 columns.
#[test]
fn matmul_matrix_vector_products_fold_batches() {
    check_all(
        &[
            (&[130, 70], &[70, 1]),
            (&[5, 6], &[4, 6, 1]),
            (&[9, 70], &[3, 2, 70, 2]),
            (&[4, 1, 6], &[6, 5]),
            (&[3, 1, 70], &[70, 65]),
        ],
        Track::Both,
    );
}

/// Only one operand tracked, the other a constant in the graph: the adjoint
/// computes only the tracked operand's gradient.
#[test]
fn matmul_one_operand_tracked() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[17, 33], &[33, 19]),
        (&[4, 5, 6], &[6, 3]),
        (&[2, 1, 5, 6], &[3, 6, 4]),
    ];
    check_all(cases, Track::OnlyA);
    check_all(cases, Track::OnlyB);
}

/// Both operands tracked, but the gradient of only one requested: the
/// result equals that operand's gradient from a request for both, and the
/// other operand's adjoint is not computed (fewer dispatches).
#[test]
fn matmul_gradient_of_one_of_two_tracked_operands() {
    let d = fresh_device();
    let mut r = rng(seed_of("matmul one of two"));
    let a = sample(&mut r, 3 * 5 * 6, Dist::Uniform(-1.0, 1.0));
    let b = sample(&mut r, 6 * 4, Dist::Uniform(-1.0, 1.0));
    let g = sample(&mut r, 3 * 5 * 4, COTANGENT);
    let a = ok(d.tensor(&a, &[3, 5, 6])).requires_grad();
    let b = ok(d.tensor(&b, &[6, 4])).requires_grad();
    let g = ok(d.tensor(&g, &[3, 5, 4]));
    let y = ok(a.matmul(&b));
    let both = ok(pullback::vjp(&[&y], &[&g], &[&a, &b]));
    let before = d.stats().dispatches;
    let only_a = ok(pullback::vjp(&[&y], &[&g], &[&a]));
    let only_a_dispatches = d.stats().dispatches - before;
    let before = d.stats().dispatches;
    let only_b = ok(pullback::vjp(&[&y], &[&g], &[&b]));
    let only_b_dispatches = d.stats().dispatches - before;
    assert_eq!(ok(only_a[0].to_vec()), ok(both[0].to_vec()));
    assert_eq!(ok(only_b[0].to_vec()), ok(both[1].to_vec()));
    // dA of a batched A times a plain B is one GEMM, dB is one GEMM.
    assert_eq!((only_a_dispatches, only_b_dispatches), (1, 1));
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// After an error the device still computes: a 1×2 by 2×1 product.
#[track_caller]
fn assert_device_usable() {
    let a = tensor(&[1.0, 2.0], &[1, 2]);
    let b = tensor(&[3.0, 4.0], &[2, 1]);
    assert_eq!(read(&ok(a.matmul(&b))), vec![11.0]);
}

#[track_caller]
fn matmul_err(a: &[usize], b: &[usize]) -> Error {
    let ta = ok(dev().zeros(a)).requires_grad();
    let tb = ok(dev().zeros(b));
    match ta.matmul(&tb) {
        Ok(t) => panic!("matmul {a:?}x{b:?} should fail, gave shape {:?}", t.shape()),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

#[test]
fn matmul_inner_dimensions_must_match() {
    for (a, b) in [
        (&[2, 3][..], &[4, 5][..]),
        (&[3, 2, 3], &[3, 4, 5]),
        (&[2, 3], &[2, 3]),
    ] {
        let e = matmul_err(a, b);
        assert_eq!(
            e,
            Error::ShapeMismatch {
                op: "matmul",
                lhs: a.to_vec(),
                rhs: b.to_vec()
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("matmul") && msg.contains(&format!("{a:?}")),
            "{msg}"
        );
        assert_device_usable();
    }
}

#[test]
fn matmul_batch_dims_must_broadcast() {
    for (a, b) in [
        (&[2, 3, 4][..], &[3, 4, 5][..]),
        (&[2, 1, 3, 4], &[3, 3, 4, 5]),
        (&[4, 2, 3, 4], &[3, 4, 5]),
    ] {
        assert_eq!(
            matmul_err(a, b),
            Error::ShapeMismatch {
                op: "matmul",
                lhs: a.to_vec(),
                rhs: b.to_vec()
            }
        );
        assert_device_usable();
    }
}

#[test]
fn matmul_needs_rank_two() {
    for (a, b) in [
        (&[3][..], &[3, 4][..]),
        (&[2, 3], &[3]),
        (&[], &[1, 1]),
        (&[4], &[4]),
    ] {
        match matmul_err(a, b) {
            Error::InvalidArgument {
                op: "matmul",
                reason,
            } => {
                assert!(reason.contains("rank >= 2"), "{reason}");
            }
            e => panic!("matmul {a:?}x{b:?}: expected InvalidArgument, got {e:?}"),
        }
        assert_device_usable();
    }
}
