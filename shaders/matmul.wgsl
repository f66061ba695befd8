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

// [DEPTH][TILE] each, as vec4 so the inner loop reads four values at once.
var<workgroup> a_tile: array<vec4<f32>, DEPTH * TILE / 4u>;
var<workgroup> b_tile: array<vec4<f32>, DEPTH * TILE / 4u>;

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = dim(0u, 0u);
    let n = dim(0u, 1u);
    let p_len = dim(0u, 2u);
    let a_rs = dim(0u, 3u);
    let a_cs = dim(0u, 4u);
    let b_rs = dim(0u, 5u);
    let b_cs = dim(1u, 0u);
    let n_in = dim(1u, 1u);
    // x0, x1: where this dispatch starts, in batch entries and row tiles
    // (the host splits grids past 65535 per dimension into several).
    let z = params.x0 + wid.z;
    let a_base = strided_offset(z, 2u, 3u) + dim(1u, 2u);
    let row0 = (params.x1 + wid.y) * TILE;
    let col0 = wid.x * TILE;
    let tx = lid.x % 16u;
    let ty = lid.x / 16u;
    // The B column this invocation loads is the same at every step (WG is
    // a multiple of TILE): its offset is computed once.
    let bj = col0 + lid.x % TILE;
    let b_live = bj < n;
    var b_col = 0u;
    if (b_live) {
        b_col = strided_offset(z + bj / n_in, 2u, 4u) + (bj % n_in) * b_cs + dim(1u, 3u);
    }
    var acc = array<vec4<f32>, 4>(vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
    for (var p0 = 0u; p0 < p_len; p0 += DEPTH) {
        for (var e = 0u; e < DEPTH * TILE / WG; e++) {
            let idx = lid.x + e * WG;
            // A: depth fastest (contiguous along a row-major A's rows).
            let p = idx % DEPTH;
            let i = idx / DEPTH;
            var v = 0.0;
            if (row0 + i < m && p0 + p < p_len) {
                v = a_buf[a_base + (row0 + i) * a_rs + (p0 + p) * a_cs];
            }
            a_tile[p * (TILE / 4u) + i / 4u][i % 4u] = v;
            // B: columns fastest (contiguous along a row-major B's rows).
            let j = idx % TILE;
            let q = idx / TILE;
            var w = 0.0;
            if (b_live && p0 + q < p_len) {
                w = b_buf[b_col + (p0 + q) * b_rs];
            }
            b_tile[q * (TILE / 4u) + j / 4u][j % 4u] = w;
        }
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
        let i = row0 + ty * 4u + r;
        if (i < m) {
            for (var c = 0u; c < 4u; c++) {
                let j = col0 + tx * 4u + c;
                if (j < n) {
                    // C is [*batch, M, N_IN], contiguous; with x2 set, this
                    // product is the transpose of the one asked for (a
                    // narrow product computed as Cᵀ = Bᵀ·Aᵀ so that its many
                    // rows fill the tiles' columns; no batch): store Cᵀ.
                    if (params.x2 != 0u) {
                        c_buf[j * m + i] = acc[r][c];
                    } else {
                        let zj = z + j / n_in;
                        c_buf[(zj * m + i) * n_in + j % n_in] = acc[r][c];
                    }
                }
            }
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
