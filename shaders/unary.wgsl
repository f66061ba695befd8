// Elementwise unary ops. Forward: y = f(x). Adjoint, for K cotangents in one
// dispatch: out[k, i] = g[k, i] * f'(s[i]), where s is the value the rule
// saved (x or y); each invocation reads s and computes f' once for its four
// elements, then loops over k. The tangent of K directions is the same
// kernel with g the tangent rows (ẏ = f'·ẋ). Second order: the curvature
// term of the adjoint's tangent, out[k, i] = ẋ[k, i] * ȳ[i] * f''(s[i]).

// The op of the `unary_*` entry points (ALIGNED and SYNC_ROWS: common.wgsl);
// the ops' math is unary_ops.wgsl, which the module includes before this
// file. Names are prefixed so that the ops' math composes with
// binary_ops.wgsl into the fused kernels.
override UNARY_OP: u32 = 0u;

@group(0) @binding(1) var<storage, read> unary_src: array<vec4<f32>>;        // x, or g [K, n]
@group(0) @binding(2) var<storage, read_write> unary_dst: array<vec4<f32>>;  // y, or out [K, n]
@group(0) @binding(3) var<storage, read> unary_saved: array<vec4<f32>>;      // x or y, as saved
@group(0) @binding(4) var<storage, read> unary_ybar: array<vec4<f32>>;       // ȳ, one row (curvature)
@group(0) @binding(5) var<storage, read> unary_tangent: array<vec4<f32>>;    // ẋ [K, n] (second order)

@compute @workgroup_size(WG)
fn unary_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    unary_dst[t] = unary_f(UNARY_OP, unary_src[t], params.scalar);
}

// out[k] = g[k] * d for the four elements of invocation t.
fn unary_adjoint_row(k: u32, t: u32, d: vec4<f32>) {
    let n = params.n;
    if (ALIGNED) {
        let j = k * (n / 4u) + t;
        unary_dst[j] = unary_src[j] * d;
        return;
    }
    for (var c = 0u; c < 4u; c++) {
        if (t * 4u + c < n) {
            let j = k * n + t * 4u + c;
            unary_dst[j / 4u][j % 4u] = unary_src[j / 4u][j % 4u] * d[c];
        }
    }
}

@compute @workgroup_size(WG)
fn unary_adjoint(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    let d = unary_d(UNARY_OP, unary_saved[t], params.scalar);
    for (var k = 0u; k < params.k; k++) {
        unary_adjoint_row(k, t, d);
    }
}

// `unary_adjoint` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn unary_adjoint_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    var d = vec4(0.0);
    if (live) {
        d = unary_d(UNARY_OP, unary_saved[t], params.scalar);
    }
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            unary_adjoint_row(k, t, d);
        }
        row_sync(k, SYNC_ROWS);
    }
}

// The curvature term of second order: out[k] = ẋ[k] * (ȳ f''(s)), the tangent
// rows ẋ at binding 1, ȳ one row at binding 4.
@compute @workgroup_size(WG)
fn unary_curvature(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    let d = unary_ybar[t] * unary_d2(UNARY_OP, unary_saved[t], params.scalar);
    for (var k = 0u; k < params.k; k++) {
        unary_adjoint_row(k, t, d);
    }
}

// `unary_curvature` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn unary_curvature_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    var d = vec4(0.0);
    if (live) {
        d = unary_ybar[t] * unary_d2(UNARY_OP, unary_saved[t], params.scalar);
    }
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            unary_adjoint_row(k, t, d);
        }
        row_sync(k, SYNC_ROWS);
    }
}

// The adjoint's tangent in one pass (second order): out[k] = ẏ̄[k]·f'(s) +
// ẋ[k]·ȳ·f''(s), the adjoint's tangent rows ẏ̄ at binding 1, the tangent
// rows ẋ at 5 (the two halves `unary_adjoint` and `unary_curvature` would
// write, then add).
fn unary_second_row(k: u32, t: u32, d: vec4<f32>, c: vec4<f32>) {
    let n = params.n;
    if (ALIGNED) {
        let j = k * (n / 4u) + t;
        unary_dst[j] = unary_src[j] * d + unary_tangent[j] * c;
        return;
    }
    for (var e = 0u; e < 4u; e++) {
        if (t * 4u + e < n) {
            let j = k * n + t * 4u + e;
            unary_dst[j / 4u][j % 4u] =
                unary_src[j / 4u][j % 4u] * d[e] + unary_tangent[j / 4u][j % 4u] * c[e];
        }
    }
}

@compute @workgroup_size(WG)
fn unary_second(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    let s = unary_saved[t];
    let d = unary_d(UNARY_OP, s, params.scalar);
    let c = unary_ybar[t] * unary_d2(UNARY_OP, s, params.scalar);
    for (var k = 0u; k < params.k; k++) {
        unary_second_row(k, t, d, c);
    }
}

// `unary_second` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn unary_second_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    var d = vec4(0.0);
    var c = vec4(0.0);
    if (live) {
        let s = unary_saved[t];
        d = unary_d(UNARY_OP, s, params.scalar);
        c = unary_ybar[t] * unary_d2(UNARY_OP, s, params.scalar);
    }
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            unary_second_row(k, t, d, c);
        }
        row_sync(k, SYNC_ROWS);
    }
}
