// One explicit step of 1-D advection-diffusion along the last axis, with
// zero values outside the domain (Dirichlet boundaries):
//   out[i] = u[i] + α·(u[i-1] − 2u[i] + u[i+1]) − β·(u[i+1] − u[i-1])/2
// α = pb_scalar(0) (diffusion), β = pb_scalar(1) (drift). The prelude
// (pb, pb_thread, pb_scalar, pb_out_dim) is appended by pullback.

@group(0) @binding(1) var<storage, read> u: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn u_at(row: u32, i: i32, n: u32) -> f32 {
    if (i < 0 || i >= i32(n)) {
        return 0.0;
    }
    return u[row * n + u32(i)];
}

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) local_index: u32) {
    let t = pb_thread(wid, nwg, local_index);
    if (t >= pb.threads) {
        return;
    }
    let n = pb_out_dim(pb.out_rank - 1u);
    let row = t / n;
    let i = i32(t % n);
    let alpha = pb_scalar(0u);
    let beta = pb_scalar(1u);
    let l = u_at(row, i - 1, n);
    let c = u_at(row, i, n);
    let r = u_at(row, i + 1, n);
    out[t] = c + alpha * (l - 2.0 * c + r) - 0.5 * beta * (r - l);
}
