// Elementwise binary ops with NumPy broadcasting.
// Forward: out = f(a, b). Adjoint, for K cotangents in one dispatch:
// ga[k, o] = g[k, o] * df/da(a, b), gb[k, o] = g[k, o] * df/db(a, b), at the
// output's shape; the rule then sums over broadcast axes (the adjoint of
// broadcasting is summation). Each invocation reads a and b once for its four
// output elements, then loops over k.
// Slots: 0 = output shape, 1 = a's strides, 2 = b's strides (0 on broadcast axes).

// The op of the `binary_*` entry points (ALIGNED and SYNC_ROWS: common.wgsl).
// Names are prefixed so that this file composes with unary.wgsl into the
// fused adjoints (see src/ops/fused.rs), which call binary_da/db with literal ops.
override BINARY_OP: u32 = 0u;
override BCAST: bool = false;   // an operand's shape differs from the output's
override NEED_A: bool = true;
override NEED_B: bool = true;

const ADD: u32 = 0u;
const SUB: u32 = 1u;
const MUL: u32 = 2u;
const DIV: u32 = 3u;

@group(0) @binding(1) var<storage, read> binary_g: array<vec4<f32>>;         // g [K, n]
@group(0) @binding(2) var<storage, read_write> binary_dst: array<vec4<f32>>;   // out, or ga [K, n]
@group(0) @binding(3) var<storage, read> binary_lhs: array<vec4<f32>>;         // a
@group(0) @binding(4) var<storage, read> binary_rhs: array<vec4<f32>>;         // b
@group(0) @binding(5) var<storage, read_write> binary_dst2: array<vec4<f32>>;  // gb [K, n]

fn binary_f(op: u32, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    switch op {
        case ADD: { return a + b; }
        case SUB: { return a - b; }
        case MUL: { return a * b; }
        case DIV: { return a / b; }
        default: { return a; }
    }
}

// d(a op b)/da: 1, 1, b, 1/b.
fn binary_da(op: u32, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    switch op {
        case MUL: { return b; }
        case DIV: { return 1.0 / b; }
        default: { return vec4(1.0); }
    }
}

// d(a op b)/db: 1, -1, a, -a/b^2 (as -(a/b)/b, which overflows later).
fn binary_db(op: u32, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    switch op {
        case SUB: { return vec4(-1.0); }
        case MUL: { return a; }
        case DIV: { return -(a / b) / b; }
        default: { return vec4(1.0); }
    }
}

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
