// dst[i] = value for i < n (vec4 at a time; buffers are padded to 16 bytes).

@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    dst[t] = vec4<f32>(params.scalar);
}

// Rows x0 .. x0 + k of the n×n identity, as k rows of n values: row r is
// 1 at column x0 + r and 0 elsewhere (the Jacobian's cotangents, made on
// the device instead of uploaded). One invocation writes four values.
@compute @workgroup_size(WG)
fn identity_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let total = params.n * params.k;
    if (t * 4u >= total) { return; }
    var v = vec4(0.0);
    for (var c = 0u; c < 4u; c++) {
        let i = t * 4u + c;
        if (i < total && i % params.n == params.x0 + i / params.n) {
            v[c] = 1.0;
        }
    }
    dst[t] = v;
}
