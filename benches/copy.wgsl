// Bandwidth baseline for benches/elementwise.rs: dst = src, one vec4<f32>
// per invocation (16 bytes read + 16 bytes written).
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn copy_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < arrayLength(&dst)) {
        dst[i] = src[i];
    }
}
