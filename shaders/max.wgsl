// Maximum along one axis. The input is viewed as [outer, D, inner]; x0 = D,
// x1 = inner, n = outer * inner outputs (x2, x3: blocks, see `forward`). The forward also records the index
// of the first maximal element (NaN counts as maximal, as in PyTorch), and
// the adjoint routes each of the K cotangents to that element alone; the
// tangent takes each of K tangents from it.

@group(0) @binding(1) var<storage, read> src: array<f32>;          // x, or g [K, n]
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;    // max, or out [K, outer*D*inner]
@group(0) @binding(3) var<storage, read_write> arg_out: array<u32>;
@group(0) @binding(4) var<storage, read> arg_in: array<u32>;

// WGSL lets implementations assume no NaN is present, and some (lavapipe's
// LLVM backend) fold `x != x` to false; test the bits instead: NaN is an
// all-ones exponent with a nonzero mantissa.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Whether v replaces best: larger, or NaN (NaN stays once found); ties
// keep the earlier element.
fn beats(v: f32, best: f32) -> bool {
    return !is_nan(best) && (v > best || is_nan(v));
}

// Output i's maximum over d in [start, end) (x2 = start's block length,
// x3 = blocks per output; one block when x3 = 1): lavapipe stops an
// invocation's loops after 65535 iterations, so long axes are cut into
// blocks (LOOP_PIECE, src/runtime/kernels.rs) and `forward_blocks` combines
// the blocks' maxima in order.
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(wid, lid, nwg);
    let nb = params.x3;
    if (id >= params.n * nb) { return; }
    let i = id / nb;
    let d_len = params.x0;
    let inner = params.x1;
    let start = (id % nb) * params.x2;
    let end = min(start + params.x2, d_len);
    let base = (i / inner) * d_len * inner + i % inner;
    var best = src[base + start * inner];
    var arg = start;
    for (var d = start + 1u; d < end; d++) {
        let v = src[base + d * inner];
        if (beats(v, best)) {
            best = v;
            arg = d;
        }
    }
    dst[id] = best;
    arg_out[id] = arg;
}

// The maximum of each output's x3 block maxima (src, with their indices
// in arg_in), earlier blocks first, so ties keep the first element.
@compute @workgroup_size(WG)
fn forward_blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(wid, lid, nwg);
    if (i >= params.n) { return; }
    let nb = params.x3;
    var best = src[i * nb];
    var arg = arg_in[i * nb];
    for (var b = 1u; b < nb; b++) {
        let v = src[i * nb + b];
        if (beats(v, best)) {
            best = v;
            arg = arg_in[i * nb + b];
        }
    }
    dst[i] = best;
    arg_out[i] = arg;
}

@compute @workgroup_size(WG)
fn adjoint(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_id(wid, lid, nwg);
    let d_len = params.x0;
    let inner = params.x1;
    let total = params.n * d_len;
    if (j >= total) { return; }
    let d = (j / inner) % d_len;
    let o = (j / (inner * d_len)) * inner + j % inner;
    let hit = arg_in[o] == d;
    for (var k = 0u; k < params.k; k++) {
        dst[k * total + j] = select(0.0, src[k * params.n + o], hit);
    }
}

// The tangent of K directions: each maximum takes its maximal element's
// tangent, out[k, o] = ẋ[k, (outer, argmax, inner) of o].
@compute @workgroup_size(WG)
fn tangent(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_id(wid, lid, nwg);
    if (o >= params.n) { return; }
    let d_len = params.x0;
    let inner = params.x1;
    let total = params.n * d_len;
    let at = (o / inner) * d_len * inner + arg_in[o] * inner + o % inner;
    for (var k = 0u; k < params.k; k++) {
        dst[k * params.n + o] = src[k * total + at];
    }
}
