// Batched GEMM: C[z] = A[z] · B[z], C is M×N (contiguous), contraction P.
// Element (i, p) of A[z] is at a_base(z) + i*a_rs + p*a_cs, so a transposed
// operand is just swapped strides, and B likewise; the batch index z walks
// the batch shape (slot 2) with per-operand strides (slots 3, 4; 0 where an
// operand is broadcast). Each workgroup computes a 64×64 tile of C, each
// invocation a 4×4 block of it, stepping through P 32 at a time with both
// operand tiles staged in workgroup memory (DEPTH 32 measured faster than 16
// on lavapipe: half the barriers).
// Slot 0: M, N, P, a_rs, a_cs, b_rs. Slot 1: b_cs, N_IN, A's and B's
// offsets (a piece of a long contraction; see gemm_launch). rank = batch rank.
// x0, x1: first batch entry and first row tile of this dispatch.
//
// Folded batches: when A is the same matrix in every batch entry, the host
// folds the batch into the columns, so narrow products (N = 1: a
// matrix-vector product per entry, or per cotangent) fill whole tiles:
// column c is column c % N_IN of batch entry c / N_IN, N counts all of
// them, and the grid has one batch entry. Unfolded, N_IN = N.

const TILE: u32 = 64u;
const DEPTH: u32 = 32u;

@group(0) @binding(1) var<storage, read> a_buf: array<f32>;
@group(0) @binding(2) var<storage, read_write> c_buf: array<f32>;
@group(0) @binding(3) var<storage, read> b_buf: array<f32>;

// Where column bj of B starts in batch entry z: with the batch folded into
// the columns, column bj is column bj % N_IN of entry z + bj / N_IN.
fn b_column(z: u32, bj: u32, n_in: u32) -> u32 {
    return strided_offset(z + bj / n_in, 2u, 4u) + (bj % n_in) * dim(1u, 0u) + dim(1u, 3u);
}

// Stores element (i, j) of batch entry g.z's product. C is [*batch, M, N_IN],
// contiguous; with x2 set, this product is the transpose of the one asked
// for (a narrow product computed as Cᵀ = Bᵀ·Aᵀ so that its many rows fill
// the tiles' columns; per batch entry where the batch is folded into the
// columns): store each entry's Cᵀ, [N_IN, M].
fn store_c(g: Gemm, i: u32, j: u32, v: f32) {
    let zj = g.z + j / g.n_in;
    if (params.x2 != 0u) {
        c_buf[(zj * g.n_in + j % g.n_in) * g.m + i] = v;
    } else {
        c_buf[(zj * g.m + i) * g.n_in + j % g.n_in] = v;
    }
}

// One launch's product as an invocation of a tile sees it.
struct Gemm {
    m: u32,
    n: u32,
    p_len: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    n_in: u32,
    // The batch entry, where A's matrix starts in it, the tile's first row
    // and column.
    z: u32,
    a_base: u32,
    row0: u32,
    col0: u32,
    // The B column this invocation loads: the same at every step (WG is a
    // multiple of the tile's side), so its offset is computed once.
    b_live: bool,
    b_col: u32,
}

// x0, x1: where this dispatch starts, in batch entries and row tiles (the
// host splits grids past 65535 per dimension into several).
fn gemm_tile(wid: vec3<u32>, lid: u32, tile: u32) -> Gemm {
    var g: Gemm;
    g.m = dim(0u, 0u);
    g.n = dim(0u, 1u);
    g.p_len = dim(0u, 2u);
    g.a_rs = dim(0u, 3u);
    g.a_cs = dim(0u, 4u);
    g.b_rs = dim(0u, 5u);
    g.n_in = dim(1u, 1u);
    g.z = params.x0 + wid.z;
    g.a_base = strided_offset(g.z, 2u, 3u) + dim(1u, 2u);
    g.row0 = (params.x1 + wid.y) * tile;
    g.col0 = wid.x * tile;
    let bj = g.col0 + lid % tile;
    g.b_live = bj < g.n;
    g.b_col = 0u;
    if (g.b_live) {
        g.b_col = b_column(g.z, bj, g.n_in);
    }
    return g;
}

// Both kernels' operand tiles, [depth][tile side] each (32 × 64 or
// 16 × 128: 16 KiB in all, WebGPU's minimum workgroup storage), as vec4s
// so the inner loops read four values at once.
const STAGED: u32 = 2048u;
const_assert DEPTH * TILE == STAGED;
var<workgroup> a_tile: array<vec4<f32>, STAGED / 4u>;
var<workgroup> b_tile: array<vec4<f32>, STAGED / 4u>;

// Stages depths p0 .. p0 + STAGED / tile of the tile's A rows and B columns.
// A: 8 consecutive depths of a row per 8 invocations (a 32-byte sector of
// a row-major A), rows next, then the next 8 depths. The tile is stored
// depth-major, so invocations writing one row's depths hit one memory
// bank: 8 at a time, not all 32 of a warp as with the depths fastest.
// B: columns fastest (contiguous along a row-major B's rows); this
// invocation's column is always the same (Gemm.b_col).
fn stage(g: Gemm, p0: u32, lid: u32, tile: u32) {
    for (var e = 0u; e < STAGED / WG; e++) {
        let idx = lid + e * WG;
        let p = idx % 8u + 8u * (idx / (8u * tile));
        let i = (idx / 8u) % tile;
        var v = 0.0;
        if (g.row0 + i < g.m && p0 + p < g.p_len) {
            v = a_buf[g.a_base + (g.row0 + i) * g.a_rs + (p0 + p) * g.a_cs];
        }
        a_tile[p * (tile / 4u) + i / 4u][i % 4u] = v;
        let j = idx % tile;
        let q = idx / tile;
        var w = 0.0;
        if (g.b_live && p0 + q < g.p_len) {
            w = b_buf[g.b_col + (p0 + q) * g.b_rs];
        }
        b_tile[q * (tile / 4u) + j / 4u][j % 4u] = w;
    }
}

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = gemm_tile(wid, lid.x, TILE);
    let tx = lid.x % 16u;
    let ty = lid.x / 16u;
    var acc = array<vec4<f32>, 4>(vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
    for (var p0 = 0u; p0 < g.p_len; p0 += DEPTH) {
        stage(g, p0, lid.x, TILE);
        workgroupBarrier();
        for (var p = 0u; p < DEPTH; p++) {
            let av = a_tile[p * (TILE / 4u) + ty];
            let bv = b_tile[p * (TILE / 4u) + tx];
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let i = g.row0 + ty * 4u + r;
        if (i < g.m) {
            for (var c = 0u; c < 4u; c++) {
                let j = g.col0 + tx * 4u + c;
                if (j < g.n) {
                    store_c(g, i, j, acc[r][c]);
                }
            }
        }
    }
}

// The same product in 128×128 tiles, an 8×8 block of C per invocation:
// the schedule for large products on GPUs (GemmKernel::LargeTiles). Each
// value staged in workgroup memory feeds 8 multiply-adds instead of 4, so a
// step of the contraction reads half as many staged values per multiply-add
// (4 vec4 loads for 64 of them). An invocation's block is four 4×4
// quadrants 64 rows or columns apart, so the 16 invocations of a row of
// threads read 16 consecutive vec4s of the B tile (no bank conflicts), and
// every accumulator is indexed by a constant (kept in registers).
const L_TILE: u32 = 128u;
const L_DEPTH: u32 = 16u;
const_assert L_DEPTH * L_TILE == STAGED;

@compute @workgroup_size(WG)
fn matmul_large(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = gemm_tile(wid, lid.x, L_TILE);
    let tx = lid.x % 16u;
    let ty = lid.x / 16u;
    // acc[2r + h]: row (r / 4)·64 + ty·4 + r % 4 of the tile, columns
    // h·64 + tx·4 .. + 3.
    var acc: array<vec4<f32>, 16>;
    for (var p0 = 0u; p0 < g.p_len; p0 += L_DEPTH) {
        stage(g, p0, lid.x, L_TILE);
        workgroupBarrier();
        for (var p = 0u; p < L_DEPTH; p++) {
            let row = p * (L_TILE / 4u);
            let a0 = a_tile[row + ty];
            let a1 = a_tile[row + 16u + ty];
            let b0 = b_tile[row + tx];
            let b1 = b_tile[row + 16u + tx];
            acc[0] += a0.x * b0;
            acc[1] += a0.x * b1;
            acc[2] += a0.y * b0;
            acc[3] += a0.y * b1;
            acc[4] += a0.z * b0;
            acc[5] += a0.z * b1;
            acc[6] += a0.w * b0;
            acc[7] += a0.w * b1;
            acc[8] += a1.x * b0;
            acc[9] += a1.x * b1;
            acc[10] += a1.y * b0;
            acc[11] += a1.y * b1;
            acc[12] += a1.z * b0;
            acc[13] += a1.z * b1;
            acc[14] += a1.w * b0;
            acc[15] += a1.w * b1;
        }
        workgroupBarrier();
    }
    let r0 = g.row0 + ty * 4u;
    let c0 = g.col0 + tx * 4u;
    store_block(g, r0, c0, acc[0], acc[1]);
    store_block(g, r0 + 1u, c0, acc[2], acc[3]);
    store_block(g, r0 + 2u, c0, acc[4], acc[5]);
    store_block(g, r0 + 3u, c0, acc[6], acc[7]);
    store_block(g, r0 + 64u, c0, acc[8], acc[9]);
    store_block(g, r0 + 65u, c0, acc[10], acc[11]);
    store_block(g, r0 + 66u, c0, acc[12], acc[13]);
    store_block(g, r0 + 67u, c0, acc[14], acc[15]);
}

// Row i of a large tile's invocation block: columns j0.. j0 + 3 from lo,
// j0 + 64 .. j0 + 67 from hi (values passed, so no accumulator is indexed
// by a variable).
fn store_block(g: Gemm, i: u32, j0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (i >= g.m) {
        return;
    }
    for (var c = 0u; c < 4u; c++) {
        if (j0 + c < g.n) {
            store_c(g, i, j0 + c, lo[c]);
        }
        if (j0 + 64u + c < g.n) {
            store_c(g, i, j0 + 64u + c, hi[c]);
        }
    }
}

// Per-example outer products, the weight gradient of a plain x·W in a
// per-example pass: C[r, j] = A[r]·B[r / P, j] for the B·P rows r (example
// r / P, input feature r % P) and the N columns j, C being [B, P, N]. The
// same value as a GEMM with a contraction of 1, without its tiles.
// Slot 0: P, N. n = rows. Grid: x over columns (64 each), y·z over rows.
@compute @workgroup_size(64)
fn outer(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = dim(0u, 0u);
    let n = dim(0u, 1u);
    let r = wid.z * nwg.y + wid.y;
    let j = wid.x * 64u + lid.x;
    if (r >= params.n || j >= n) { return; }
    c_buf[r * n + j] = a_buf[r] * b_buf[(r / p) * n + j];
}
