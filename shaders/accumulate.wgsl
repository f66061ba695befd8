// The scheduler's accumulation: acc += c over n elements, in place,
// used when a cotangent receives a second contribution and the scheduler
// holds the only reference to the accumulator.

@group(0) @binding(1) var<storage, read> contribution: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> acc: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn add_into(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    acc[t] = acc[t] + contribution[t];
}

// a + b into a new buffer (when the scheduler cannot add in place): the
// contribution at binding 1, the accumulator so far at 3, the sum at 2.
@group(0) @binding(3) var<storage, read> accumulated: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    acc[t] = accumulated[t] + contribution[t];
}
