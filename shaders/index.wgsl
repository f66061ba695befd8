// index_select along one axis: the input is viewed as [outer, D, inner]
// (x0 = D, x1 = inner), the output as [outer, L, inner] (x2 = L).
// forward: out[o, j, r] = x[o, idx[j], r].
// adjoint (scatter-add without atomics): for each input element (o, d, r)
// and each of the K cotangents, sum g[k, o, j, r] over the j with idx[j] = d,
// listed by the host as list[starts[d] .. starts[d + 1]]. Deterministic.

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;   // idx, or starts
@group(0) @binding(4) var<storage, read> list: array<u32>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(wid, lid, nwg);
    if (i >= params.n) { return; }
    let inner = params.x1;
    let len = params.x2;
    let o = i / (len * inner);
    let j = (i / inner) % len;
    dst[i] = src[(o * params.x0 + indices[j]) * inner + i % inner];
}

@compute @workgroup_size(WG)
fn adjoint(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let d_len = params.x0;
    let inner = params.x1;
    let len = params.x2;
    let outer = params.x3;
    let total = outer * d_len * inner;
    if (t >= total) { return; }
    let o = t / (d_len * inner);
    let d = (t / inner) % d_len;
    let r = t % inner;
    let g_row = outer * len * inner;
    let first = indices[d];
    let last = indices[d + 1u];
    for (var k = 0u; k < params.k; k++) {
        var s = 0.0;
        for (var e = first; e < last; e++) {
            s += src[k * g_row + (o * len + list[e]) * inner + r];
        }
        dst[k * total + t] = s;
    }
}
