// Arithmetic peak for benches/linalg.rs: each invocation runs ITERS rounds
// of 8 independent vec4 FMAs (8 · 4 · 2 = 64 FLOP per round), with no
// memory traffic but one store at the end, so the compiler cannot drop it.
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;

const ITERS: u32 = 1024u;

@compute @workgroup_size(256)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>) {
    let seed = f32(gid.x) * 1e-7;
    var a0 = vec4(seed, seed + 1e-3, seed + 2e-3, seed + 3e-3);
    var a1 = a0 + 0.1;
    var a2 = a0 + 0.2;
    var a3 = a0 + 0.3;
    var a4 = a0 + 0.4;
    var a5 = a0 + 0.5;
    var a6 = a0 + 0.6;
    var a7 = a0 + 0.7;
    let m = vec4(0.999999);
    let c = vec4(1e-6);
    for (var i = 0u; i < ITERS; i++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
    }
    out[gid.x] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}
