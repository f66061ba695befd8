//! The errors of the reductions (`sum`, `mean`, `max`) and of the ops that
//! move values (`narrow`, `permute`, `transpose`, `reshape`,
//! `index_select`, `broadcast_to`, `concat`): the variant, the op it names
//! and its text, each followed by a computation that shows the device still
//! works.

mod common;

use common::*;
use pullback::{Error, Tensor};

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// After an error the device still computes: a small sum.
#[track_caller]
fn assert_device_usable() {
    let x = tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2]).requires_grad();
    let y = ok(x.sum(&[1], false));
    assert_eq!(read(&y), vec![3.0, 7.0]);
    let g = ok(pullback::vjp(&[&y], &[&tensor(&[1.0, 2.0], &[2])], &[&x]));
    assert_eq!(read(&g[0]), vec![1.0, 1.0, 2.0, 2.0]);
}

/// Asserts `r` is `InvalidArgument` of `op` whose reason contains `needle`.
#[track_caller]
fn expect_invalid(r: pullback::Result<Tensor>, op: &str, needle: &str) {
    match r {
        Err(Error::InvalidArgument { op: got, reason }) => {
            assert_eq!(got, op, "{reason}");
            assert!(
                reason.contains(needle),
                "{op}: reason {reason:?} should mention {needle:?}"
            );
            let msg = Error::InvalidArgument { op: got, reason }.to_string();
            assert!(msg.starts_with(op), "{msg}");
        }
        Err(e) => panic!("{op}: expected InvalidArgument, got {e:?}"),
        Ok(t) => panic!(
            "{op}: expected an error, got a tensor of shape {:?}",
            t.shape()
        ),
    }
    assert_device_usable();
}

#[track_caller]
fn expect_mismatch(r: pullback::Result<Tensor>, op: &str, lhs: &[usize], rhs: &[usize]) {
    match r {
        Err(e @ Error::ShapeMismatch { .. }) => {
            assert_eq!(
                e,
                Error::ShapeMismatch {
                    op: match op {
                        "concat" => "concat",
                        "broadcast_to" => "broadcast_to",
                        _ => unreachable!(),
                    },
                    lhs: lhs.to_vec(),
                    rhs: rhs.to_vec()
                }
            );
            let msg = e.to_string();
            assert!(
                msg.contains(op) && msg.contains(&format!("{rhs:?}")),
                "{msg}"
            );
        }
        Err(e) => panic!("{op}: expected ShapeMismatch, got {e:?}"),
        Ok(t) => panic!(
            "{op}: expected an error, got a tensor of shape {:?}",
            t.shape()
        ),
    }
    assert_device_usable();
}

fn x234() -> Tensor {
    ok(dev().zeros(&[2, 3, 4])).requires_grad()
}

#[test]
fn reduction_axis_errors() {
    let x = x234();
    expect_invalid(x.sum(&[3], false), "sum", "axis 3 is out of range");
    expect_invalid(x.sum(&[0, 7], true), "sum", "axis 7 is out of range");
    expect_invalid(x.sum(&[1, 1], false), "sum", "listed twice");
    expect_invalid(x.mean(&[3], false), "mean", "axis 3 is out of range");
    expect_invalid(x.max(3, false), "max", "axis 3 is out of range");
    let s = ok(dev().scalar(1.0));
    expect_invalid(s.max(0, false), "max", "axis 0 is out of range");
    expect_invalid(s.sum(&[0], false), "sum", "axis 0 is out of range");
}

#[test]
fn layout_errors() {
    let x = x234();
    expect_invalid(x.narrow(3, 0, 1), "narrow", "axis 3 is out of range");
    expect_invalid(x.narrow(1, 2, 2), "narrow", "exceeds axis 1 of size 3");
    expect_invalid(x.narrow(1, usize::MAX, 2), "narrow", "exceeds");
    expect_invalid(x.permute(&[0, 1, 3]), "permute", "not a permutation");
    expect_invalid(x.permute(&[0, 1, 1]), "permute", "not a permutation");
    expect_invalid(x.permute(&[0, 1]), "permute", "not a permutation");
    expect_invalid(x.permute(&[0, 1, 2, 3]), "permute", "not a permutation");
    expect_invalid(x.transpose(0, 3), "transpose", "axis 3 is out of range");
    expect_invalid(x.reshape(&[5, 5]), "reshape", "24 elements");
    expect_invalid(x.reshape(&[]), "reshape", "cannot reshape");
    expect_invalid(
        x.index_select(3, &[0]),
        "index_select",
        "axis 3 is out of range",
    );
    expect_invalid(
        x.index_select(1, &[0, 3, 1]),
        "index_select",
        "index 3 is out of range for axis 1 of size 3",
    );
    expect_mismatch(
        x.broadcast_to(&[2, 3, 5]),
        "broadcast_to",
        &[2, 3, 4],
        &[2, 3, 5],
    );
    expect_mismatch(x.broadcast_to(&[3, 4]), "broadcast_to", &[2, 3, 4], &[3, 4]);
    expect_mismatch(
        x.broadcast_to(&[4, 2, 2, 4]),
        "broadcast_to",
        &[2, 3, 4],
        &[4, 2, 2, 4],
    );
}

#[test]
fn concat_errors() {
    let x = x234();
    let y = ok(dev().zeros(&[2, 5, 4]));
    let z = ok(dev().zeros(&[2, 3]));
    expect_invalid(
        pullback::concat(&[&x, &y], 3),
        "concat",
        "axis 3 is out of range",
    );
    expect_mismatch(
        pullback::concat(&[&x, &y], 0),
        "concat",
        &[2, 3, 4],
        &[2, 5, 4],
    );
    expect_mismatch(
        pullback::concat(&[&x, &y], 2),
        "concat",
        &[2, 3, 4],
        &[2, 5, 4],
    );
    expect_mismatch(Tensor::concat(&[&x, &z], 1), "concat", &[2, 3, 4], &[2, 3]);
    expect_invalid(pullback::concat(&[], 0), "concat", "at least one");
}
