//! conv1d, conv2d (stride, padding, dilation, groups), max_pool2d and
//! avg_pool2d against direct float64 loops: forward, the reference VJP
//! against finite differences, `vjp` and `vjp_batched` (K = 1, 3, 64;
//! `common::VjpCheck`); the dispatch count of a K-batched convolution
//! adjoint does not grow with K; ties in max pooling; bad shapes.

mod common;

use common::*;
use pullback::ConvOptions;

/// Sums of C/g·kh·kw ≤ 36 products of values ≤ 1 (dW: of N·OH·OW ≤ 200).
const CONV: Tol = Tol::new(2e-6, 2e-6);

fn opts(stride: usize, padding: usize, dilation: usize, groups: usize) -> ConvOptions {
    ConvOptions {
        stride,
        padding,
        dilation,
        groups,
    }
}

/// Direct 2-D convolution in f64, and its VJP, by the definition.
struct Conv2d {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: [usize; 2],
    opt: ConvOptions,
}

impl Conv2d {
    fn out_hw(&self) -> (usize, usize) {
        let f = |len: usize, k: usize| {
            (len + 2 * self.opt.padding - self.opt.dilation * (k - 1) - 1) / self.opt.stride + 1
        };
        (f(self.h, self.k[0]), f(self.w, self.k[1]))
    }

    /// Calls `f(out_index, x_index, w_index)` for every product of the sum.
    fn each(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (oh, ow) = self.out_hw();
        let (g, p, s, d) = (
            self.opt.groups,
            self.opt.padding,
            self.opt.stride,
            self.opt.dilation,
        );
        let (cg, og) = (self.c / g, self.o / g);
        for b in 0..self.n {
            for oc in 0..self.o {
                let grp = oc / og;
                for y in 0..oh {
                    for x in 0..ow {
                        let out = ((b * self.o + oc) * oh + y) * ow + x;
                        for ci in 0..cg {
                            let ch = grp * cg + ci;
                            for i in 0..self.k[0] {
                                for j in 0..self.k[1] {
                                    let hh = (y * s + i * d) as isize - p as isize;
                                    let ww = (x * s + j * d) as isize - p as isize;
                                    if hh < 0
                                        || ww < 0
                                        || hh >= self.h as isize
                                        || ww >= self.w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((b * self.c + ch) * self.h + hh as usize) * self.w
                                        + ww as usize;
                                    let wi = ((oc * cg + ci) * self.k[0] + i) * self.k[1] + j;
                                    f(out, xi, wi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn check(&self, name: &str, one_d: bool) -> Report {
        let (oh, ow) = self.out_hw();
        let cg = self.c / self.opt.groups;
        let (xs, ws, ys): (Vec<usize>, Vec<usize>, Vec<usize>) = if one_d {
            (
                vec![self.n, self.c, self.w],
                vec![self.o, cg, self.k[1]],
                vec![self.n, self.o, ow],
            )
        } else {
            (
                vec![self.n, self.c, self.h, self.w],
                vec![self.o, cg, self.k[0], self.k[1]],
                vec![self.n, self.o, oh, ow],
            )
        };
        let n_out = numel(&ys);
        let opt = self.opt;
        VjpCheck::new(name.to_string())
            .input(&xs, Dist::Uniform(-1.0, 1.0))
            .input(&ws, Dist::Uniform(-1.0, 1.0))
            .output(&ys)
            .forward_tol(CONV)
            .vjp_tol(CONV)
            .run(
                |t| {
                    if one_d {
                        t[0].conv1d(&t[1], opt)
                    } else {
                        t[0].conv2d(&t[1], opt)
                    }
                },
                |v| {
                    let mut y = vec![0.0; n_out];
                    self.each(|o, xi, wi| y[o] += v[0][xi] * v[1][wi]);
                    y
                },
                |v, g| {
                    let (mut gx, mut gw) = (vec![0.0; v[0].len()], vec![0.0; v[1].len()]);
                    self.each(|o, xi, wi| {
                        gx[xi] += g[o] * v[1][wi];
                        gw[wi] += g[o] * v[0][xi];
                    });
                    vec![gx, gw]
                },
            )
    }
}

#[test]
fn conv2d_over_strides_padding_dilation_and_groups() {
    let cases = [
        (2, 3, 6, 5, 4, [3, 3], opts(1, 0, 1, 1)),
        (2, 3, 7, 7, 4, [3, 2], opts(2, 1, 1, 1)),
        (1, 4, 9, 8, 6, [3, 3], opts(1, 2, 2, 2)),
        (3, 4, 5, 5, 4, [1, 1], opts(1, 0, 1, 4)),
        (1, 2, 4, 4, 2, [4, 4], opts(3, 1, 1, 1)),
    ];
    let mut all = Report::default();
    for (n, c, h, w, o, k, opt) in cases {
        let cv = Conv2d {
            n,
            c,
            h,
            w,
            o,
            k,
            opt,
        };
        all = all.merge(cv.check(
            &format!(
                "conv2d [{n},{c},{h},{w}] * [{o},{},{k:?}] {opt:?}",
                c / opt.groups
            ),
            false,
        ));
    }
    all.print("family conv2d");
}

#[test]
fn conv1d_over_strides_padding_dilation_and_groups() {
    let cases = [
        (2, 3, 9, 4, 3, opts(1, 0, 1, 1)),
        (2, 4, 10, 6, 3, opts(2, 2, 2, 2)),
        (1, 2, 5, 2, 5, opts(1, 2, 1, 1)),
    ];
    for (n, c, w, o, k, opt) in cases {
        let name = format!(
            "conv1d [{n},{c},{w}] * [{o},{},{k}] {opt:?}",
            c / opt.groups
        );
        check_conv1d(n, c, w, o, k, opt, &name);
    }
}

/// conv1d against a direct 1-D loop.
fn check_conv1d(n: usize, c: usize, w: usize, o: usize, k: usize, opt: ConvOptions, name: &str) {
    let (s, p, d, g) = (opt.stride, opt.padding, opt.dilation, opt.groups);
    let ow = (w + 2 * p - d * (k - 1) - 1) / s + 1;
    let (cg, og) = (c / g, o / g);
    let each = move |f: &mut dyn FnMut(usize, usize, usize)| {
        for b in 0..n {
            for oc in 0..o {
                for x in 0..ow {
                    for ci in 0..cg {
                        for j in 0..k {
                            let ww = (x * s + j * d) as isize - p as isize;
                            if ww < 0 || ww >= w as isize {
                                continue;
                            }
                            let ch = (oc / og) * cg + ci;
                            f(
                                (b * o + oc) * ow + x,
                                (b * c + ch) * w + ww as usize,
                                (oc * cg + ci) * k + j,
                            );
                        }
                    }
                }
            }
        }
    };
    VjpCheck::new(name.to_string())
        .input(&[n, c, w], Dist::Uniform(-1.0, 1.0))
        .input(&[o, cg, k], Dist::Uniform(-1.0, 1.0))
        .output(&[n, o, ow])
        .forward_tol(CONV)
        .vjp_tol(CONV)
        .run(
            |t| t[0].conv1d(&t[1], opt),
            |v| {
                let mut y = vec![0.0; n * o * ow];
                each(&mut |oi, xi, wi| y[oi] += v[0][xi] * v[1][wi]);
                y
            },
            |v, gr| {
                let (mut gx, mut gw) = (vec![0.0; v[0].len()], vec![0.0; v[1].len()]);
                each(&mut |oi, xi, wi| {
                    gx[xi] += gr[oi] * v[1][wi];
                    gw[wi] += gr[oi] * v[0][xi];
                });
                vec![gx, gw]
            },
        );
}

#[test]
fn max_and_avg_pooling() {
    for (n, c, h, w, k, s) in [(2, 3, 6, 6, 2, 2), (1, 2, 7, 5, 3, 2), (2, 1, 4, 4, 2, 1)] {
        let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
        let windows = move |b: usize, y: usize, x: usize| -> Vec<usize> {
            let mut v = vec![];
            for i in 0..k {
                for j in 0..k {
                    v.push((b * h + y * s + i) * w + x * s + j);
                }
            }
            v
        };
        let out = [n, c, oh, ow];
        for avg in [false, true] {
            let name = format!(
                "{} [{n},{c},{h},{w}] k{k} s{s}",
                if avg { "avg_pool2d" } else { "max_pool2d" }
            );
            VjpCheck::new(name)
                .input(&[n, c, h, w], Dist::Uniform(-1.0, 1.0))
                .output(&out)
                // Overlapping windows add up to k² shares: a few roundings.
                .forward_tol(Tol::new(1e-6, 1e-7))
                .vjp_tol(Tol::new(1e-6, 1e-7))
                .run(
                    |t| {
                        if avg {
                            t[0].avg_pool2d(k, s)
                        } else {
                            t[0].max_pool2d(k, s)
                        }
                    },
                    |v| {
                        let mut y = vec![];
                        for bc in 0..n * c {
                            for yy in 0..oh {
                                for xx in 0..ow {
                                    let vals = windows(bc, yy, xx).into_iter().map(|i| v[0][i]);
                                    y.push(if avg {
                                        vals.sum::<f64>() / (k * k) as f64
                                    } else {
                                        vals.fold(f64::MIN, f64::max)
                                    });
                                }
                            }
                        }
                        y
                    },
                    |v, g| {
                        let mut gx = vec![0.0; v[0].len()];
                        let mut o = 0;
                        for bc in 0..n * c {
                            for yy in 0..oh {
                                for xx in 0..ow {
                                    let win = windows(bc, yy, xx);
                                    if avg {
                                        for i in win {
                                            gx[i] += g[o] / (k * k) as f64;
                                        }
                                    } else {
                                        let m =
                                            win.iter().map(|&i| v[0][i]).fold(f64::MIN, f64::max);
                                        let first = *win.iter().find(|&&i| v[0][i] == m).unwrap();
                                        gx[first] += g[o];
                                    }
                                    o += 1;
                                }
                            }
                        }
                        vec![gx]
                    },
                );
        }
    }
}

#[test]
fn k_batched_conv_adjoint_costs_the_same_dispatches_for_every_k() {
    let d = fresh_device();
    let mut r = rng(seed_of("conv dispatches"));
    let x = ok(d.tensor(
        &sample(&mut r, 2 * 3 * 8 * 8, Dist::Uniform(-1.0, 1.0)),
        &[2, 3, 8, 8],
    ))
    .requires_grad();
    let w = ok(d.tensor(
        &sample(&mut r, 4 * 3 * 9, Dist::Uniform(-1.0, 1.0)),
        &[4, 3, 3, 3],
    ))
    .requires_grad();
    let y = ok(ok(x.conv2d(&w, opts(1, 1, 1, 1))).gelu());
    ok(d.synchronize());
    let mut cost = vec![];
    for k in [1, 16] {
        let v = ok(d.full(&[k, 2, 4, 8, 8], 1.0));
        let before = d.stats();
        let g = ok(pullback::vjp_batched(&[&y], &[&v], &[&x, &w]));
        ok(d.synchronize());
        cost.push(d.stats().dispatches - before.dispatches);
        drop(g);
    }
    eprintln!("dispatches for K = 1, 16: {cost:?}");
    // A pass ran (unfold's adjoint, the GEMMs), and K did not add any.
    assert!(cost[0] >= 3, "{cost:?}");
    assert_eq!(cost[0], cost[1]);
}

#[test]
fn pooling_ties_and_bad_shapes() {
    let d = dev();
    // A 2×2 window of equal values: the top-left one takes the gradient.
    let x = ok(d.tensor(&[1.0; 4], &[1, 1, 2, 2])).requires_grad();
    let g = ok(pullback::vjp(
        &[&ok(x.max_pool2d(2, 2))],
        &[&ok(d.full(&[1, 1, 1, 1], 1.0))],
        &[&x],
    ));
    assert_eq!(read(&g[0]), vec![1.0, 0.0, 0.0, 0.0]);
    let w = ok(d.tensor(&[1.0; 18], &[2, 1, 3, 3]));
    let img = ok(d.tensor(&[1.0; 32], &[1, 2, 4, 4]));
    expect_invalid(img.conv2d(&w, opts(1, 0, 1, 1)), "conv2d", &["channels"]);
    let w2 = ok(d.tensor(&[1.0; 36], &[2, 2, 3, 3]));
    expect_invalid(img.conv2d(&w2, opts(0, 0, 1, 1)), "conv2d", &["stride"]);
    expect_invalid(
        img.conv2d(&ok(d.tensor(&[1.0; 50], &[2, 1, 5, 5])), opts(1, 0, 1, 2)),
        "conv2d",
        &["does not fit"],
    );
    expect_invalid(
        img.conv1d(&w, ConvOptions::default()),
        "conv1d",
        &["[N, C, W]"],
    );
    expect_invalid(
        ok(d.tensor(&[1.0; 4], &[4])).max_pool2d(2, 2),
        "max_pool2d",
        &["[N, C, H, W]"],
    );
    assert_eq!(ConvOptions::default(), opts(1, 0, 1, 1));
}
