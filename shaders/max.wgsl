// Maximum along one axis. The input is viewed as [outer, D, inner]; x0 = D,
// x1 = inner, n = outer * inner outputs. The forward also records the index
// of the first maximal element (NaN counts as maximal, as in PyTorch), and
// the adjoint routes each of the K cotangents to that element alone.

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

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(wid, lid, nwg);
    if (i >= params.n) { return; }
    let d_len = params.x0;
    let inner = params.x1;
    let base = (i / inner) * d_len * inner + i % inner;
    var best = src[base];
    var arg = 0u;
    for (var d = 1u; d < d_len; d++) {
        let v = src[base + d * inner];
        if (!is_nan(best) && (v > best || is_nan(v))) {
            best = v;
            arg = d;
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
