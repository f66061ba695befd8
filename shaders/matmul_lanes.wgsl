// Batched GEMM for CPU adapters (lavapipe): the same parameters, grid,
// folding and results as `matmul` in matmul.wgsl, on a schedule that suits
// a SIMD CPU. llvmpipe runs the 8 invocations of a subgroup as the 8 lanes
// of one vector register: arithmetic is as cheap as on one lane, but a
// memory access whose address differs between lanes becomes a loop over the
// lanes (workgroup memory included), while subgroupBroadcast from a
// constant lane is one register shuffle. So the cost is the lane-varying
// loads, and this kernel does few of them per FMA:
// - each invocation owns one column of C and the workgroup's 32 rows;
// - per four steps of the contraction it loads its column's 4 values of B,
//   and 4 × 4 values of A: lane l of the subgroup loads rows l, l+8, l+16, l+24;
// - every lane gets the rows it did not load by broadcast from the lane
//   that did.
// That is 8 lane-varying loads (vec4 loads where A's rows are aligned) per
// 128 FMAs, against 8 per 16 FMAs in the shared-tile kernel; measured on
// lavapipe at 1024³: about 20 GFLOP/s against 5.5 (64 rows per workgroup:
// 23, but twice the compile time; see LANE_ROWS in src/ops/matmul/gemm.rs).
// Needs subgroups of at least 8 invocations; the host picks this kernel
// only then, on CPU adapters.
// Slots as in matmul.wgsl. Bindings 4 and 5 are bindings 1 and 3 again,
// read as vec4s (A_VEC4: a_cs = 1 and every row offset a multiple of 4;
// B_VEC4 likewise for B's columns).

override A_VEC4: bool = false;
// B's columns are contiguous and start at multiples of 4 (b_rs = 1: a
// transposed row-major B, as in dA = G·Bᵀ): read them as vec4s.
override B_VEC4: bool = false;
// A's columns are contiguous and start at multiples of 4 (a_rs = 1: a
// transposed row-major A, as in dB = Aᵀ·G, every weight gradient): lane l
// reads rows 4l..4l+3 at each of the four steps as vec4s instead.
override A_ROWS4: bool = false;
const ROWS: u32 = 32u;
const COLS: u32 = 64u;

@group(0) @binding(1) var<storage, read> a_buf: array<f32>;
@group(0) @binding(2) var<storage, read_write> c_buf: array<f32>;
@group(0) @binding(3) var<storage, read> b_buf: array<f32>;
@group(0) @binding(4) var<storage, read> a_vec: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> b_vec: array<vec4<f32>>;
// Binding 2 again, written as vec4s (matmul_quads).
@group(0) @binding(6) var<storage, read_write> c_vec: array<vec4<f32>>;

// A[row, p..p+4] for the row starting at `row`.
fn a_quad(row: u32, p: u32, a_cs: u32) -> vec4<f32> {
    if (A_VEC4) {
        return a_vec[(row + p) / 4u];
    }
    return vec4(a_buf[row + p * a_cs], a_buf[row + (p + 1u) * a_cs],
                a_buf[row + (p + 2u) * a_cs], a_buf[row + (p + 3u) * a_cs]);
}

// B[p..p+4, col] for the column starting at `col`.
fn b_quad(col: u32, p: u32, b_rs: u32) -> vec4<f32> {
    if (B_VEC4) {
        return b_vec[(col + p) / 4u];
    }
    return vec4(b_buf[col + p * b_rs], b_buf[col + (p + 1u) * b_rs],
                b_buf[col + (p + 2u) * b_rs], b_buf[col + (p + 3u) * b_rs]);
}

// acc[r] += Σ_d A[row r, p+d]·B[p+d, col]: lane r holds row r's four values
// of A in `a`, every lane its own column's four values of B in `b`.
fn fma_rows(acc: ptr<function, array<f32, 8>>, a: vec4<f32>, b: vec4<f32>) {
    (*acc)[0] = fma_quad((*acc)[0], subgroupBroadcast(a, 0u), b);
    (*acc)[1] = fma_quad((*acc)[1], subgroupBroadcast(a, 1u), b);
    (*acc)[2] = fma_quad((*acc)[2], subgroupBroadcast(a, 2u), b);
    (*acc)[3] = fma_quad((*acc)[3], subgroupBroadcast(a, 3u), b);
    (*acc)[4] = fma_quad((*acc)[4], subgroupBroadcast(a, 4u), b);
    (*acc)[5] = fma_quad((*acc)[5], subgroupBroadcast(a, 5u), b);
    (*acc)[6] = fma_quad((*acc)[6], subgroupBroadcast(a, 6u), b);
    (*acc)[7] = fma_quad((*acc)[7], subgroupBroadcast(a, 7u), b);
}

// A_ROWS4: rows first..first+4 of `acc` from the lane whose four rows at
// steps p..p+4 are x0..x3 (row first+c is (x0[c], x1[c], x2[c], x3[c])).
fn fma_four(acc: ptr<function, array<f32, 8>>, first: u32, x0: vec4<f32>, x1: vec4<f32>,
            x2: vec4<f32>, x3: vec4<f32>, b: vec4<f32>) {
    (*acc)[first] = fma_quad((*acc)[first], vec4(x0.x, x1.x, x2.x, x3.x), b);
    (*acc)[first + 1u] = fma_quad((*acc)[first + 1u], vec4(x0.y, x1.y, x2.y, x3.y), b);
    (*acc)[first + 2u] = fma_quad((*acc)[first + 2u], vec4(x0.z, x1.z, x2.z, x3.z), b);
    (*acc)[first + 3u] = fma_quad((*acc)[first + 3u], vec4(x0.w, x1.w, x2.w, x3.w), b);
}

// acc + a·b, in the order of p (so every element sums in the same order).
fn fma_quad(acc: f32, a: vec4<f32>, b: vec4<f32>) -> f32 {
    return fma(a.w, b.w, fma(a.z, b.z, fma(a.y, b.y, fma(a.x, b.x, acc))));
}

// Writes rows first..first+8 of this invocation's column (those below m).
fn store_rows(acc: ptr<function, array<f32, 8>>, first: u32, m: u32, out: u32, row_stride: u32) {
    for (var r = 0u; r < 8u; r++) {
        if (first + r < m) {
            c_buf[out + (first + r) * row_stride] = (*acc)[r];
        }
    }
}

@compute @workgroup_size(COLS)
fn matmul_lanes(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) li: u32,
                @builtin(subgroup_invocation_id) lane: u32) {
    let m = dim(0u, 0u);
    let n = dim(0u, 1u);
    let p_len = dim(0u, 2u);
    let a_rs = dim(0u, 3u);
    let a_cs = dim(0u, 4u);
    let b_rs = dim(0u, 5u);
    let b_cs = dim(1u, 0u);
    let n_in = dim(1u, 1u);
    let z = params.x0 + wid.z;
    let row0 = (params.x1 + wid.y) * ROWS;
    let j = wid.x * COLS + li;
    // Columns and rows past the edge compute on clamped indices (no
    // divergent branches in the loop) and are not stored.
    let jc = min(j, n - 1u);
    let b_col = strided_offset(z + jc / n_in, 2u, 4u) + (jc % n_in) * b_cs + dim(1u, 3u);
    let a_base = strided_offset(z, 2u, 3u) + dim(1u, 2u);
    var rows: array<u32, 4>;
    for (var g = 0u; g < 4u; g++) {
        rows[g] = a_base + min(row0 + g * 8u + lane % 8u, m - 1u) * a_rs;
    }
    var acc0: array<f32, 8>;
    var acc1: array<f32, 8>;
    var acc2: array<f32, 8>;
    var acc3: array<f32, 8>;
    // Groups of 8 rows below m (uniform): a narrow tile skips the rest.
    let groups = min(4u, (m - row0 + 7u) / 8u);
    // Steps of 4 along the contraction; past its end (the last step when
    // P is not a multiple of 4) both operands read as 0, so that nothing
    // read there (NaN included) reaches the sums.
    for (var p = 0u; p < p_len; p += 4u) {
        let live = vec4(p, p + 1u, p + 2u, p + 3u) < vec4(p_len);
        let b = select(vec4(0.0), b_quad(b_col, p, b_rs), live);
        if (A_ROWS4) {
            // Rows row0+4l..+3 at steps p..p+3; a step past the end reads 0.
            let at = a_base + row0 + 4u * (lane % 8u) + p * a_cs;
            let a0 = a_vec[at / 4u];
            let a1 = select(vec4(0.0), a_vec[(at + a_cs) / 4u], vec4(live.y));
            let a2 = select(vec4(0.0), a_vec[(at + 2u * a_cs) / 4u], vec4(live.z));
            let a3 = select(vec4(0.0), a_vec[(at + 3u * a_cs) / 4u], vec4(live.w));
            fma_four(&acc0, 0u, subgroupBroadcast(a0, 0u), subgroupBroadcast(a1, 0u),
                     subgroupBroadcast(a2, 0u), subgroupBroadcast(a3, 0u), b);
            fma_four(&acc0, 4u, subgroupBroadcast(a0, 1u), subgroupBroadcast(a1, 1u),
                     subgroupBroadcast(a2, 1u), subgroupBroadcast(a3, 1u), b);
            if (groups > 1u) {
                fma_four(&acc1, 0u, subgroupBroadcast(a0, 2u), subgroupBroadcast(a1, 2u),
                         subgroupBroadcast(a2, 2u), subgroupBroadcast(a3, 2u), b);
                fma_four(&acc1, 4u, subgroupBroadcast(a0, 3u), subgroupBroadcast(a1, 3u),
                         subgroupBroadcast(a2, 3u), subgroupBroadcast(a3, 3u), b);
            }
            if (groups > 2u) {
                fma_four(&acc2, 0u, subgroupBroadcast(a0, 4u), subgroupBroadcast(a1, 4u),
                         subgroupBroadcast(a2, 4u), subgroupBroadcast(a3, 4u), b);
                fma_four(&acc2, 4u, subgroupBroadcast(a0, 5u), subgroupBroadcast(a1, 5u),
                         subgroupBroadcast(a2, 5u), subgroupBroadcast(a3, 5u), b);
            }
            if (groups > 3u) {
                fma_four(&acc3, 0u, subgroupBroadcast(a0, 6u), subgroupBroadcast(a1, 6u),
                         subgroupBroadcast(a2, 6u), subgroupBroadcast(a3, 6u), b);
                fma_four(&acc3, 4u, subgroupBroadcast(a0, 7u), subgroupBroadcast(a1, 7u),
                         subgroupBroadcast(a2, 7u), subgroupBroadcast(a3, 7u), b);
            }
            continue;
        }
        fma_rows(&acc0, select(vec4(0.0), a_quad(rows[0], p, a_cs), live), b);
        if (groups > 1u) { fma_rows(&acc1, select(vec4(0.0), a_quad(rows[1], p, a_cs), live), b); }
        if (groups > 2u) { fma_rows(&acc2, select(vec4(0.0), a_quad(rows[2], p, a_cs), live), b); }
        if (groups > 3u) { fma_rows(&acc3, select(vec4(0.0), a_quad(rows[3], p, a_cs), live), b); }
    }
    if (j < n) {
        // C is [*batch, M, N_IN], contiguous; or, with x2 set, this product
        // is the transpose of the one asked for (the host swapped the
        // operands of a narrow product, C = A·B with few columns being
        // computed as Cᵀ = Bᵀ·Aᵀ, whose many columns fill the lanes): store
        // each batch entry's Cᵀ, [N_IN, M]. A parameter, not an override:
        // one pipeline fewer to compile.
        let zj = z + j / n_in;
        var out = zj * m * n_in + j % n_in;
        var row_stride = n_in;
        if (params.x2 != 0u) {
            out = (zj * n_in + j % n_in) * m;
            row_stride = 1u;
        }
        store_rows(&acc0, row0, m, out, row_stride);
        store_rows(&acc1, row0 + 8u, m, out, row_stride);
        store_rows(&acc2, row0 + 16u, m, out, row_stride);
        store_rows(&acc3, row0 + 24u, m, out, row_stride);
    }
}

// matmul_quads: B's columns are contiguous and start at multiples of 4
// (b_rs = 1: a transposed row-major B): each of the four columns is read
// as a vec4 along p, and the 4×4 block transposed in registers.
override B_COLS4: bool = false;

// B[p..p+4, col..col+4] as rows (b[d]: row p+d), the rows not `live`
// (past the contraction's end) 0. `col` is the offset of B[0, first
// column].
fn b_block(col: u32, p: u32, live: vec4<bool>, p_len: u32, b_rs: u32, b_cs: u32) -> mat4x4<f32> {
    var b: mat4x4<f32>;
    if (B_COLS4) {
        b = transpose(mat4x4(b_vec[(col + p) / 4u], b_vec[(col + b_cs + p) / 4u],
                             b_vec[(col + 2u * b_cs + p) / 4u], b_vec[(col + 3u * b_cs + p) / 4u]));
    } else {
        // Rows contiguous (b_cs = 1), each row's four columns one vec4.
        let last = p_len - 1u;
        b = mat4x4(b_vec[(col + p * b_rs) / 4u], b_vec[(col + min(p + 1u, last) * b_rs) / 4u],
                   b_vec[(col + min(p + 2u, last) * b_rs) / 4u],
                   b_vec[(col + min(p + 3u, last) * b_rs) / 4u]);
    }
    return mat4x4(select(vec4(0.0), b[0], live.x), select(vec4(0.0), b[1], live.y),
                  select(vec4(0.0), b[2], live.z), select(vec4(0.0), b[3], live.w));
}

// acc[r] += Σ_d A[row r, p+d]·B[p+d, four columns], lane r holding row r's
// four values of A.
fn fma_quads(acc: ptr<function, array<vec4<f32>, 8>>, a: vec4<f32>, b: mat4x4<f32>) {
    (*acc)[0] = fma_quad4((*acc)[0], subgroupBroadcast(a, 0u), b);
    (*acc)[1] = fma_quad4((*acc)[1], subgroupBroadcast(a, 1u), b);
    (*acc)[2] = fma_quad4((*acc)[2], subgroupBroadcast(a, 2u), b);
    (*acc)[3] = fma_quad4((*acc)[3], subgroupBroadcast(a, 3u), b);
    (*acc)[4] = fma_quad4((*acc)[4], subgroupBroadcast(a, 4u), b);
    (*acc)[5] = fma_quad4((*acc)[5], subgroupBroadcast(a, 5u), b);
    (*acc)[6] = fma_quad4((*acc)[6], subgroupBroadcast(a, 6u), b);
    (*acc)[7] = fma_quad4((*acc)[7], subgroupBroadcast(a, 7u), b);
}

// acc + Σ_d a_d·b[d] (b[d]: B's row p+d at four columns), in the order of p.
fn fma_quad4(acc: vec4<f32>, a: vec4<f32>, b: mat4x4<f32>) -> vec4<f32> {
    return fma(vec4(a.w), b[3], fma(vec4(a.z), b[2], fma(vec4(a.y), b[1],
           fma(vec4(a.x), b[0], acc))));
}

// The same products on another schedule, for B with contiguous rows
// (b_cs = 1, rows and batch entries starting at multiples of 4) or
// columns (B_COLS4) and C's rows a multiple of 4 long: each invocation
// owns four adjacent columns of C and the workgroup's 8 rows. Per four steps of the contraction it loads
// four vec4s of B and one quad of A (lane r: row r), and stores each of its
// rows as one vec4, where matmul_lanes stores one value per row: 4x fewer
// lane-varying stores and loads of B. That is what a short contraction
// (p of 10: a classifier head's adjoints) or few rows is bound by.
// Each element sums in the order of p, as in every schedule.
@compute @workgroup_size(COLS)
fn matmul_quads(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) li: u32,
                @builtin(subgroup_invocation_id) lane: u32) {
    let m = dim(0u, 0u);
    let n = dim(0u, 1u);
    let p_len = dim(0u, 2u);
    let a_rs = dim(0u, 3u);
    let a_cs = dim(0u, 4u);
    let b_rs = dim(0u, 5u);
    let n_in = dim(1u, 1u);
    let z = params.x0 + wid.z;
    let row0 = (params.x1 + wid.y) * 8u;
    let j = (wid.x * COLS + li) * 4u;
    let jc = min(j, n - 4u);
    let b_cs = dim(1u, 0u);
    let b_col = strided_offset(z + jc / n_in, 2u, 4u) + (jc % n_in) * b_cs + dim(1u, 3u);
    let a_row = strided_offset(z, 2u, 3u) + dim(1u, 2u) + min(row0 + lane % 8u, m - 1u) * a_rs;
    var acc: array<vec4<f32>, 8>;
    for (var p = 0u; p < p_len; p += 4u) {
        let live = vec4(p, p + 1u, p + 2u, p + 3u) < vec4(p_len);
        fma_quads(&acc, select(vec4(0.0), a_quad(a_row, p, a_cs), live),
                  b_block(b_col, p, live, p_len, b_rs, b_cs));
    }
    if (j >= n) {
        return;
    }
    let zj = z + j / n_in;
    for (var r = 0u; r < 8u; r++) {
        let row = row0 + r;
        if (row < m) {
            if (params.x2 != 0u) {
                // Cᵀ of this batch entry, [N_IN, M] (see matmul_lanes).
                let out = (zj * n_in + j % n_in) * m + row;
                c_buf[out] = acc[r].x;
                c_buf[out + m] = acc[r].y;
                c_buf[out + 2u * m] = acc[r].z;
                c_buf[out + 3u * m] = acc[r].w;
            } else {
                c_vec[((zj * m + row) * n_in + j % n_in) / 4u] = acc[r];
            }
        }
    }
}
