// dst[i] = value for i < n (vec4 at a time; buffers are padded to 16 bytes).

@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    dst[t] = vec4<f32>(params.scalar);
}
