// Elementwise binary ops with NumPy broadcasting.
// Forward: out = f(a, b). Adjoint, for K cotangents in one dispatch:
// ga[k, o] = g[k, o] * df/da(a, b), gb[k, o] = g[k, o] * df/db(a, b), at the
// output's shape; the rule then sums over broadcast axes (the adjoint of
// broadcasting is summation). Each invocation reads a and b once for its four
// output elements, then loops over k.
// Slots: 0 = output shape, 1 = a's strides, 2 = b's strides (0 on broadcast axes).

// The op of the `binary_*` entry points (ALIGNED and SYNC_ROWS: common.wgsl);
// the ops' math is binary_ops.wgsl, which the module includes before this
// file.
override BINARY_OP: u32 = 0u;
override BCAST: bool = false;   // an operand's shape differs from the output's
override NEED_A: bool = true;
override NEED_B: bool = true;

@group(0) @binding(1) var<storage, read> binary_g: array<vec4<f32>>;         // g [K, n]
@group(0) @binding(2) var<storage, read_write> binary_dst: array<vec4<f32>>;   // out, or ga [K, n]
@group(0) @binding(3) var<storage, read> binary_lhs: array<vec4<f32>>;         // a
@group(0) @binding(4) var<storage, read> binary_rhs: array<vec4<f32>>;         // b
@group(0) @binding(5) var<storage, read_write> binary_dst2: array<vec4<f32>>;  // gb [K, n]
// Forward mode and second order: the tangent rows of a and b, each [K, n] at
// the output's shape, at bindings 1 (binary_g) and 6; ȳ, one row at the
// output's shape, at 7. With TANGENT_OWN (ALIGNED, no operand read
// STRIDED) a broadcast operand's rows are [K, *its shape], each read
// through its mode as its values are; without, the host expanded them.
@group(0) @binding(6) var<storage, read> binary_tb: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> binary_ybar: array<vec4<f32>>;
// Which operands have a tangent (the others' are zero).
override TANGENT_A: bool = true;
override TANGENT_B: bool = true;
override TANGENT_OWN: bool = false;

fn binary_elem(buf_is_a: bool, i: u32) -> f32 {
    if (buf_is_a) {
        let o = strided_offset(i, 0u, 1u);
        return binary_lhs[o / 4u][o % 4u];
    }
    let o = strided_offset(i, 0u, 2u);
    return binary_rhs[o / 4u][o % 4u];
}

// How an operand broadcast to the output is read (A_MODE, B_MODE; with
// BCAST). Its size in slot 3 (word 0 for a, 1 for b) is its length for
// SUFFIX and the number of output elements per value for PREFIX; both are
// multiples of 4, so four consecutive outputs read one vec4 or one value.
const SAME: u32 = 0u;     // the output's shape
const SUFFIX: u32 = 1u;   // the output's trailing axes (a bias row): i % len
const PREFIX: u32 = 2u;   // the output's leading axes (a column): i / per
const STRIDED: u32 = 3u;  // anything else: through the strides in slot 1 or 2
override A_MODE: u32 = STRIDED;
override B_MODE: u32 = STRIDED;

fn binary_lhs_at(t: u32) -> vec4<f32> {
    let size = dim(3u, 0u);
    switch A_MODE {
        case SAME: { return binary_lhs[t]; }
        case SUFFIX: { return binary_lhs[t % (size / 4u)]; }
        case PREFIX: { let o = t * 4u / size; return vec4(binary_lhs[o / 4u][o % 4u]); }
        default: { return binary_strided(true, t); }
    }
}

fn binary_rhs_at(t: u32) -> vec4<f32> {
    let size = dim(3u, 1u);
    switch B_MODE {
        case SAME: { return binary_rhs[t]; }
        case SUFFIX: { return binary_rhs[t % (size / 4u)]; }
        case PREFIX: { let o = t * 4u / size; return vec4(binary_rhs[o / 4u][o % 4u]); }
        default: { return binary_strided(false, t); }
    }
}

// Output elements 4t..4t+3 of one operand through its strides (0 past the end).
fn binary_strided(buf_is_a: bool, t: u32) -> vec4<f32> {
    var v = vec4(0.0);
    for (var c = 0u; c < 4u; c++) {
        let i = t * 4u + c;
        if (i < params.n) {
            v[c] = binary_elem(buf_is_a, i);
        }
    }
    return v;
}

// The four operand values behind output elements 4t..4t+3.
fn binary_operands(t: u32) -> array<vec4<f32>, 2> {
    if (!BCAST) { return array(binary_lhs[t], binary_rhs[t]); }
    return array(binary_lhs_at(t), binary_rhs_at(t));
}

@compute @workgroup_size(WG)
fn binary_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    let ab = binary_operands(t);
    binary_dst[t] = binary_f(BINARY_OP, ab[0], ab[1]);
}

// ga[k] = g[k] * da and gb[k] = g[k] * db for the four elements of invocation t.
fn binary_adjoint_row(k: u32, t: u32, da: vec4<f32>, db: vec4<f32>) {
    let n = params.n;
    if (ALIGNED) {
        let j = k * (n / 4u) + t;
        let g = binary_g[j];
        if (NEED_A) { binary_dst[j] = g * da; }
        if (NEED_B) { binary_dst2[j] = g * db; }
        return;
    }
    for (var c = 0u; c < 4u; c++) {
        if (t * 4u + c < n) {
            let j = k * n + t * 4u + c;
            let g = binary_g[j / 4u][j % 4u];
            if (NEED_A) { binary_dst[j / 4u][j % 4u] = g * da[c]; }
            if (NEED_B) { binary_dst2[j / 4u][j % 4u] = g * db[c]; }
        }
    }
}

@compute @workgroup_size(WG)
fn binary_adjoint(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    let ab = binary_operands(t);
    let da = binary_da(BINARY_OP, ab[0], ab[1]);
    let db = binary_db(BINARY_OP, ab[0], ab[1]);
    for (var k = 0u; k < params.k; k++) {
        binary_adjoint_row(k, t, da, db);
    }
}

// `binary_adjoint` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn binary_adjoint_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    var da = vec4(0.0);
    var db = vec4(0.0);
    if (live) {
        let ab = binary_operands(t);
        da = binary_da(BINARY_OP, ab[0], ab[1]);
        db = binary_db(BINARY_OP, ab[0], ab[1]);
    }
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            binary_adjoint_row(k, t, da, db);
        }
        row_sync(k, SYNC_ROWS);
    }
}

// Row k of a's tangent behind output elements 4t..4t+3 (ALIGNED).
fn binary_ta_row(k: u32, t: u32) -> vec4<f32> {
    let n4 = params.n / 4u;
    let size = dim(3u, 0u);
    if (TANGENT_OWN && A_MODE == SUFFIX) { return binary_g[k * (size / 4u) + t % (size / 4u)]; }
    if (TANGENT_OWN && A_MODE == PREFIX) {
        let o = k * (params.n / size) + t * 4u / size;
        return vec4(binary_g[o / 4u][o % 4u]);
    }
    return binary_g[k * n4 + t];
}

// Row k of b's tangent behind output elements 4t..4t+3 (ALIGNED).
fn binary_tb_row(k: u32, t: u32) -> vec4<f32> {
    let n4 = params.n / 4u;
    let size = dim(3u, 1u);
    if (TANGENT_OWN && B_MODE == SUFFIX) { return binary_tb[k * (size / 4u) + t % (size / 4u)]; }
    if (TANGENT_OWN && B_MODE == PREFIX) {
        let o = k * (params.n / size) + t * 4u / size;
        return vec4(binary_tb[o / 4u][o % 4u]);
    }
    return binary_tb[k * n4 + t];
}

// The tangent of K directions: ẏ[k] = da·ȧ[k] + db·ḃ[k], written to binary_dst.
fn binary_tangent_row(k: u32, t: u32, da: vec4<f32>, db: vec4<f32>) {
    let n = params.n;
    if (ALIGNED) {
        let j = k * (n / 4u) + t;
        var v = vec4(0.0);
        if (TANGENT_A) { v += binary_ta_row(k, t) * da; }
        if (TANGENT_B) { v += binary_tb_row(k, t) * db; }
        binary_dst[j] = v;
        return;
    }
    for (var c = 0u; c < 4u; c++) {
        if (t * 4u + c < n) {
            let j = k * n + t * 4u + c;
            var v = 0.0;
            if (TANGENT_A) { v += binary_g[j / 4u][j % 4u] * da[c]; }
            if (TANGENT_B) { v += binary_tb[j / 4u][j % 4u] * db[c]; }
            binary_dst[j / 4u][j % 4u] = v;
        }
    }
}

@compute @workgroup_size(WG)
fn binary_tangent(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    let ab = binary_operands(t);
    let da = binary_da(BINARY_OP, ab[0], ab[1]);
    let db = binary_db(BINARY_OP, ab[0], ab[1]);
    for (var k = 0u; k < params.k; k++) {
        binary_tangent_row(k, t, da, db);
    }
}

// `binary_tangent` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn binary_tangent_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    var da = vec4(0.0);
    var db = vec4(0.0);
    if (live) {
        let ab = binary_operands(t);
        da = binary_da(BINARY_OP, ab[0], ab[1]);
        db = binary_db(BINARY_OP, ab[0], ab[1]);
    }
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            binary_tangent_row(k, t, da, db);
        }
        row_sync(k, SYNC_ROWS);
    }
}

// The second derivatives (f_aa, f_ab, f_bb) of a op b where they are not
// all 0 (add, sub, the piecewise-linear maximum/minimum and where_cond's
// halves have none): mul (0, 1, 0); div (0, −1/b², 2a/b³); pow
// (b(b − 1)a^(b−2), a^(b−1)(1 + b·ln a), a^b·ln² a), the terms with ln a
// taken as 0 where a = 0 and b >= 0, as the first derivative is.
fn binary_d2(op: u32, a: vec4<f32>, b: vec4<f32>) -> array<vec4<f32>, 3> {
    switch op {
        case MUL: { return array(vec4(0.0), vec4(1.0), vec4(0.0)); }
        case DIV: {
            let r = 1.0 / b;
            return array(vec4(0.0), -r * r, 2.0 * a * r * r * r);
        }
        case POW: {
            let l = log(a);
            let zero_base = a == vec4(0.0) & b >= vec4(0.0);
            let faa = b * (b - 1.0) * pow4(a, b - 2.0);
            let fab = select(pow4(a, b - 1.0) * (1.0 + b * l), vec4(0.0), zero_base);
            let fbb = select(pow4(a, b) * l * l, vec4(0.0), zero_base);
            return array(faa, fab, fbb);
        }
        default: { return array(vec4(0.0), vec4(0.0), vec4(0.0)); }
    }
}

// The curvature term of second order, for K rows: into binary_dst (when
// NEED_A) ȳ·(f_aa·ȧ[k] + f_ab·ḃ[k]), into binary_dst2 (NEED_B)
// ȳ·(f_ab·ȧ[k] + f_bb·ḃ[k]), at the output's shape.
fn binary_curvature_row(k: u32, t: u32, d2: array<vec4<f32>, 3>) {
    let n = params.n;
    if (ALIGNED) {
        let j = k * (n / 4u) + t;
        var ta = vec4(0.0);
        var tb = vec4(0.0);
        if (TANGENT_A) { ta = binary_ta_row(k, t); }
        if (TANGENT_B) { tb = binary_tb_row(k, t); }
        if (NEED_A) { binary_dst[j] = d2[0] * ta + d2[1] * tb; }
        if (NEED_B) { binary_dst2[j] = d2[1] * ta + d2[2] * tb; }
        return;
    }
    for (var c = 0u; c < 4u; c++) {
        if (t * 4u + c < n) {
            let j = k * n + t * 4u + c;
            var ta = 0.0;
            var tb = 0.0;
            if (TANGENT_A) { ta = binary_g[j / 4u][j % 4u]; }
            if (TANGENT_B) { tb = binary_tb[j / 4u][j % 4u]; }
            if (NEED_A) { binary_dst[j / 4u][j % 4u] = d2[0][c] * ta + d2[1][c] * tb; }
            if (NEED_B) { binary_dst2[j / 4u][j % 4u] = d2[1][c] * ta + d2[2][c] * tb; }
        }
    }
}

// ȳ times the second derivatives at the four elements of invocation t.
fn binary_scaled_d2(t: u32) -> array<vec4<f32>, 3> {
    let ab = binary_operands(t);
    let d2 = binary_d2(BINARY_OP, ab[0], ab[1]);
    let y = binary_ybar[t];
    return array(y * d2[0], y * d2[1], y * d2[2]);
}

@compute @workgroup_size(WG)
fn binary_curvature(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t * 4u >= params.n) { return; }
    let d2 = binary_scaled_d2(t);
    for (var k = 0u; k < params.k; k++) {
        binary_curvature_row(k, t, d2);
    }
}

// `binary_curvature` with a barrier every SYNC_ROWS rows (see row_sync).
@compute @workgroup_size(WG)
fn binary_curvature_synced(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    let live = t * 4u < params.n;
    var d2 = array(vec4(0.0), vec4(0.0), vec4(0.0));
    if (live) {
        d2 = binary_scaled_d2(t);
    }
    for (var k = 0u; k < params.k; k++) {
        if (live) {
            binary_curvature_row(k, t, d2);
        }
        row_sync(k, SYNC_ROWS);
    }
}
