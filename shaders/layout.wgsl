// Strided copies, batched over K rows: every op that only moves values
// (permute, broadcast_to, narrow, concat) and each of their adjoints is one
// of these. offset(i) = x1 + strided_offset(i, slot 0 = shape walked, slot 1
// = strides); x0 = elements per batch row on the strided side.
// gather:  dst[k*n + i] = scale * src[k*x0 + offset(i)]
// scatter: dst[k*x0 + offset(i)] = src[k*n + i]

// Rows of the K loop between workgroup barriers; 0: none. See common.wgsl.
// false: gather; true: scatter.
override SCATTER: bool = false;

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// One row of either direction: gather, or scatter when SCATTER is set.
fn copy_row(k: u32, i: u32, off: u32) {
    if (SCATTER) {
        dst[k * params.x0 + off] = src[k * params.n + i];
    } else {
        dst[k * params.n + i] = params.scalar * src[k * params.x0 + off];
    }
}

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(wid, lid, nwg);
    if (i >= params.n) { return; }
    let off = params.x1 + strided_offset(i, 0u, 1u);
    for (var k = 0u; k < params.k; k++) {
        copy_row(k, i, off);
    }
}

// `copy` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn copy_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(wid, lid, nwg);
    let live = i < params.n;
    let off = params.x1 + strided_offset(select(0u, i, live), 0u, 1u);
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            copy_row(k, i, off);
        }
        row_sync(k, SYNC_ROWS);
    }
}

// A row repeated along the output's leading or trailing axes (broadcast_to's
// two common shapes), four outputs an invocation: out[k, i] = src[k, i % x2]
// (REPEAT = 1: the source is the output's trailing axes, x2 its length) or
// src[k, i / x2] (REPEAT = 2: its leading axes, x2 outputs per value); x0 =
// source elements per row, n = output elements per row, a multiple of 4.
override REPEAT: u32 = 1u;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;

fn repeat_row(k: u32, t: u32) {
    var v = vec4(0.0);
    for (var c = 0u; c < 4u; c++) {
        let i = t * 4u + c;
        let at = select(i / params.x2, i % params.x2, REPEAT == 1u);
        v[c] = src[k * params.x0 + at];
    }
    dst4[k * (params.n / 4u) + t] = v;
}

@compute @workgroup_size(WG)
fn repeat(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    for (var k = 0u; k < params.k; k++) {
        repeat_row(k, t);
    }
}

// `repeat` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn repeat_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            repeat_row(k, t);
        }
        row_sync(k, SYNC_ROWS);
    }
}
