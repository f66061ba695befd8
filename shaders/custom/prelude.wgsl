// pullback's custom-op prelude. pullback appends it after the user's WGSL
// (so naga's line numbers in errors are the user's own lines). The layout
// below is the contract documented on `pullback::CustomOp`; Rust side:
// src/ops/custom/mod.rs. Ranks are at most 6; dims past the rank are 1.

struct PbParams {
    // Invocations with work: numel(output) in `forward`, K * numel(input i)
    // in `adjoint_i`. Invocations past it must return without writing.
    threads: u32,
    // Cotangents in this dispatch (1 in `forward`).
    k: u32,
    // Invocations per workgroup of this entry point.
    wg_size: u32,
    // `adjoint_i`: i. `forward`: 0.
    input: u32,
    // Elements of the output and of input `input`.
    n_out: u32,
    n_in: u32,
    out_rank: u32,
    // The inputs' ranks, 8 bits each (input i at bits 8i..8i+8).
    in_ranks: u32,
    out_shape: array<vec4<u32>, 2>,
    in_shapes: array<array<vec4<u32>, 2>, 4>,
    // The scalars given to `CustomOp::apply`, in order (16 at most).
    scalars: array<vec4<f32>, 4>,
}

@group(0) @binding(0) var<uniform> pb: PbParams;

// This invocation's linear index: workgroups are spread over x and y
// (at most 65535 each), so use this rather than global_invocation_id.x.
fn pb_thread(wid: vec3<u32>, nwg: vec3<u32>, local_index: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * pb.wg_size + local_index;
}

// Scalar parameter i.
fn pb_scalar(i: u32) -> f32 {
    return pb.scalars[i / 4u][i % 4u];
}

// Dimension d of the output.
fn pb_out_dim(d: u32) -> u32 {
    return pb.out_shape[d / 4u][d % 4u];
}

// Dimension d of input i, and its rank.
fn pb_in_dim(i: u32, d: u32) -> u32 {
    return pb.in_shapes[i][d / 4u][d % 4u];
}
fn pb_in_rank(i: u32) -> u32 {
    return (pb.in_ranks >> (8u * i)) & 0xffu;
}
