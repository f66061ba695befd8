// The adjoint of diffusion_forward.wgsl: the transposed stencil. The step
// is linear, out = A·u with A[i][i] = 1 − 2α, A[i][i−1] = α + β/2 and
// A[i][i+1] = α − β/2, so the contribution is Aᵀ·g: the diffusion part is
// symmetric and the drift changes sign,
//   c[i] = g[i] + α·(g[i-1] − 2g[i] + g[i+1]) + β·(g[i+1] − g[i-1])/2,
// for each of the K cotangent rows g = cot[k] (one dispatch for all K:
// invocation t is element t % n of row t / n). Nothing is saved.

@group(0) @binding(1) var<storage, read> cot: array<f32>;
@group(0) @binding(2) var<storage, read_write> contribution: array<f32>;

fn g_at(row: u32, i: i32, n: u32) -> f32 {
    if (i < 0 || i >= i32(n)) {
        return 0.0;
    }
    return cot[row * n + u32(i)];
}

@compute @workgroup_size(64)
fn adjoint_0(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) local_index: u32) {
    let t = pb_thread(wid, nwg, local_index);
    if (t >= pb.threads) {
        return;
    }
    // Rows of length n: K cotangents times the leading axes of u.
    let n = pb_in_dim(0u, pb_in_rank(0u) - 1u);
    let row = t / n;
    let i = i32(t % n);
    let alpha = pb_scalar(0u);
    let beta = pb_scalar(1u);
    let l = g_at(row, i - 1, n);
    let c = g_at(row, i, n);
    let r = g_at(row, i + 1, n);
    contribution[t] = c + alpha * (l - 2.0 * c + r) + 0.5 * beta * (r - l);
}
