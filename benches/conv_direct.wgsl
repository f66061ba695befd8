// A direct 2-D convolution for the conv bench's shape (x [32, 16, 32, 32],
// w [32, 16, 3, 3], padding 1, stride 1): one invocation per output
// element, summing its 144 products in a loop. The baseline against which
// pullback's unfold + GEMM is measured (benches/conv.rs).

const N: u32 = 32u;
const C: u32 = 16u;
const O: u32 = 32u;
const S: u32 = 32u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn conv_direct(@builtin(global_invocation_id) id: vec3<u32>) {
    let e = id.x;
    if (e >= N * O * S * S) { return; }
    let col = e % S;
    let row = (e / S) % S;
    let o = (e / (S * S)) % O;
    let b = e / (S * S * O);
    var acc = 0.0;
    for (var c = 0u; c < C; c++) {
        for (var i = 0u; i < 3u; i++) {
            let h = i32(row + i) - 1;
            if (h < 0 || h >= i32(S)) { continue; }
            for (var j = 0u; j < 3u; j++) {
                let v = i32(col + j) - 1;
                if (v < 0 || v >= i32(S)) { continue; }
                acc += x[((b * C + c) * S + u32(h)) * S + u32(v)] * w[((o * C + c) * 3u + i) * 3u + j];
            }
        }
    }
    y[e] = acc;
}
