// Sum over axes, batched: src [K, *in] -> dst [K, *out] where out is `in` with
// the reduced axes set to 1; dst = scale * sum. Used for sum/mean and for the
// adjoint of broadcasting. Compensated (Kahan) sums keep f32 error near one
// rounding for long reductions.
// Params: n = outputs per row, k = K, x0 = R (elements summed per output),
// x1 = input elements per row, x2 = the bits of 1.0 (see opaque_one),
// scalar = scale. Slots: 0 = kept shape (1 on reduced axes), 1 = input
// strides of kept axes, 2 = reduced shape (1 on kept axes), 3 = input
// strides of reduced axes.

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

var<workgroup> partial: array<f32, WG>;

// Four outputs at a time, for sums over the leading axes of a row (the
// adjoint of repeating a bias row): the same memory as src and dst.
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;


fn base_offset(o: u32) -> u32 {
    return (o / params.n) * params.x1 + strided_offset(o % params.n, 0u, 1u);
}

// One invocation per output: for many outputs, each a short sum.
@compute @workgroup_size(WG)
fn sum_each(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_id(wid, lid, nwg);
    if (o >= params.n * params.k) { return; }
    let base = base_offset(o);
    let one = opaque_one();
    var sc = vec2(0.0);
    for (var r = 0u; r < params.x0; r++) {
        sc = kahan_add(sc, src[base + strided_offset(r, 2u, 3u)], one);
    }
    dst[o] = sc.x * params.scalar;
}

// One workgroup per output: for few outputs, each a long sum.
@compute @workgroup_size(WG)
fn sum_group(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = workgroup_linear(wid, nwg);
    if (o >= params.n * params.k) { return; }
    let base = base_offset(o);
    let one = opaque_one();
    var sc = vec2(0.0);
    for (var r = lid.x; r < params.x0; r += WG) {
        sc = kahan_add(sc, src[base + strided_offset(r, 2u, 3u)], one);
    }
    partial[lid.x] = sc.x;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lid.x < width) {
            partial[lid.x] += partial[lid.x + width];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        dst[o] = partial[0] * params.scalar;
    }
}

// kahan_add on four lanes.
fn kahan_add4(s: vec4<f32>, c: vec4<f32>, x: vec4<f32>, one: f32) -> array<vec4<f32>, 2> {
    let y = x - c;
    let t = s + y;
    let e = (t * one - s) - y;
    let inf = (bitcast<vec4<u32>>(e) & vec4(0x7f800000u)) == vec4(0x7f800000u);
    return array(t, select(e, vec4(0.0), inf));
}

// Sums over the leading axes of each row, four outputs an invocation: the
// row is [R, n] (x0 = R, n a multiple of 4), out[k, 4t..4t+3] =
// scale·Σ_r src[k, r, 4t..4t+3], compensated like the others. Reads and
// writes are contiguous vec4s, where `sum_each` walks strides one element
// at a time.
@compute @workgroup_size(WG)
fn sum_leading(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = linear_id(wid, lid, nwg);
    let n4 = params.n / 4u;
    if (g >= n4 * params.k) { return; }
    let k = g / n4;
    let base = k * params.x0 * n4 + g % n4;
    let one = opaque_one();
    var sc = array(vec4(0.0), vec4(0.0));
    for (var r = 0u; r < params.x0; r++) {
        sc = kahan_add4(sc[0], sc[1], src4[base + r * n4], one);
    }
    dst4[g] = sc[0] * params.scalar;
}
