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

// Stores element (i, j) of batch entry z's product. C is [*batch, M, N_IN],
// contiguous; with x2 set, this product is the transpose of the one asked
// for (a narrow product computed as Cᵀ = Bᵀ·Aᵀ so that its many rows fill
// the tiles' columns; no batch): store Cᵀ.
fn store_c(z: u32, i: u32, j: u32, m: u32, n_in: u32, v: f32) {
    if (params.x2 != 0u) {
        c_buf[j * m + i] = v;
    } else {
        let zj = z + j / n_in;
        c_buf[(zj * m + i) * n_in + j % n_in] = v;
    }
}

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
        b_col = b_column(z, bj, n_in);
    }
    var acc = array<vec4<f32>, 4>(vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
    for (var p0 = 0u; p0 < p_len; p0 += DEPTH) {
        for (var e = 0u; e < DEPTH * TILE / WG; e++) {
            let idx = lid.x + e * WG;
            // A: 8 consecutive depths of a row per 8 invocations (a 32-byte
            // sector of a row-major A), rows next, then the next 8 depths.
            // The tile is stored depth-major, so invocations writing one
            // row's depths hit one memory bank: 8 at a time, not all 32 of
            // a warp as with the depths fastest.
            let p = idx % 8u + 8u * (idx / (8u * TILE));
            let i = (idx / 8u) % TILE;
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
                    store_c(z, i, j, m, n_in, acc[r][c]);
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
// [L_DEPTH][L_TILE] each: 16 KiB in all, WebGPU's minimum workgroup storage.
var<workgroup> la_tile: array<vec4<f32>, L_DEPTH * L_TILE / 4u>;
var<workgroup> lb_tile: array<vec4<f32>, L_DEPTH * L_TILE / 4u>;

@compute @workgroup_size(WG)
fn matmul_large(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = dim(0u, 0u);
    let n = dim(0u, 1u);
    let p_len = dim(0u, 2u);
    let a_rs = dim(0u, 3u);
    let a_cs = dim(0u, 4u);
    let b_rs = dim(0u, 5u);
    let n_in = dim(1u, 1u);
    let z = params.x0 + wid.z;
    let a_base = strided_offset(z, 2u, 3u) + dim(1u, 2u);
    let row0 = (params.x1 + wid.y) * L_TILE;
    let col0 = wid.x * L_TILE;
    let tx = lid.x % 16u;
    let ty = lid.x / 16u;
    let bj = col0 + lid.x % L_TILE;
    let b_live = bj < n;
    var b_col = 0u;
    if (b_live) {
        b_col = b_column(z, bj, n_in);
    }
    // acc[2r + h]: row (r / 4)·64 + ty·4 + r % 4 of the tile, columns
    // h·64 + tx·4 .. + 3.
    var acc: array<vec4<f32>, 16>;
    for (var p0 = 0u; p0 < p_len; p0 += L_DEPTH) {
        for (var e = 0u; e < L_DEPTH * L_TILE / WG; e++) {
            let idx = lid.x + e * WG;
            // A: as in `matmul`, 8 depths of a row per 8 invocations.
            let p = idx % 8u + 8u * (idx / (8u * L_TILE));
            let i = (idx / 8u) % L_TILE;
            var v = 0.0;
            if (row0 + i < m && p0 + p < p_len) {
                v = a_buf[a_base + (row0 + i) * a_rs + (p0 + p) * a_cs];
            }
            la_tile[p * (L_TILE / 4u) + i / 4u][i % 4u] = v;
            // B: columns fastest; this invocation's column is always bj.
            let q = idx / L_TILE;
            var w = 0.0;
            if (b_live && p0 + q < p_len) {
                w = b_buf[b_col + (p0 + q) * b_rs];
            }
            lb_tile[q * (L_TILE / 4u) + (lid.x % L_TILE) / 4u][lid.x % 4u] = w;
        }
        workgroupBarrier();
        for (var p = 0u; p < L_DEPTH; p++) {
            let row = p * (L_TILE / 4u);
            let a0 = la_tile[row + ty];
            let a1 = la_tile[row + 16u + ty];
            let b0 = lb_tile[row + tx];
            let b1 = lb_tile[row + 16u + tx];
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
    let r0 = row0 + ty * 4u;
    let c0 = col0 + tx * 4u;
    store_block(z, r0, c0, m, n, n_in, acc[0], acc[1]);
    store_block(z, r0 + 1u, c0, m, n, n_in, acc[2], acc[3]);
    store_block(z, r0 + 2u, c0, m, n, n_in, acc[4], acc[5]);
    store_block(z, r0 + 3u, c0, m, n, n_in, acc[6], acc[7]);
    store_block(z, r0 + 64u, c0, m, n, n_in, acc[8], acc[9]);
    store_block(z, r0 + 65u, c0, m, n, n_in, acc[10], acc[11]);
    store_block(z, r0 + 66u, c0, m, n, n_in, acc[12], acc[13]);
    store_block(z, r0 + 67u, c0, m, n, n_in, acc[14], acc[15]);
}

// Row i of a large tile's invocation block: columns j0.. j0 + 3 from lo,
// j0 + 64 .. j0 + 67 from hi (values passed, so no accumulator is indexed
// by a variable).
fn store_block(z: u32, i: u32, j0: u32, m: u32, n: u32, n_in: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (i >= m) {
        return;
    }
    for (var c = 0u; c < 4u; c++) {
        if (j0 + c < n) {
            store_c(z, i, j0 + c, m, n_in, lo[c]);
        }
        if (j0 + 64u + c < n) {
            store_c(z, i, j0 + 64u + c, m, n_in, hi[c]);
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
