// Sliding windows of images (im2col): x [B, H, W] (B = batch · channels)
// becomes cols [B, kh, kw, OH, OW] with
//   cols[b, i, j, oh, ow] = x[b, oh·sh + i·dh − ph, ow·sw + j·dw − pw]
// (0 outside the image: zero padding). Convolution is then a matrix
// product with the weights, pooling a reduction over (i, j).
// The adjoint is the fold (col2im), written as a gather so that no two
// invocations write one element (no atomics): input element (b, h, w)
// sums the cotangents of every window position that read it. All K
// cotangent rows are more images: B covers K · batch · channels.
// Slot 0: H, W, OH, OW, kh, kw. Slot 1: sh, sw, ph, pw, dh, dw.
// params.n: runs of output positions (unfold, see RUN) or input elements
// (fold).

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// Slot 0 as named lengths: image, output positions and kernel.
struct Geometry {
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
}

fn geometry() -> Geometry {
    return Geometry(dim(0u, 0u), dim(0u, 1u), dim(0u, 2u), dim(0u, 3u), dim(0u, 4u), dim(0u, 5u));
}

// One invocation per run of up to RUN output positions along a row of
// cols[b, i, j, oh, ·]: the index arithmetic (integer divisions, which a
// SIMD CPU does lane by lane) is done once per run, not per element.
// params.n: the number of runs.
const RUN: u32 = 32u;

@compute @workgroup_size(WG)
fn unfold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t >= params.n) { return; }
    let g = geometry();
    let runs = (g.ow + RUN - 1u) / RUN;
    let row = t / runs;
    let ow0 = (t - row * runs) * RUN;
    let oh = row % g.oh;
    let j = (row / g.oh) % g.kw;
    let i = (row / (g.oh * g.kw)) % g.kh;
    let b = row / (g.oh * g.kw * g.kh);
    let h = i32(oh * dim(1u, 0u) + i * dim(1u, 4u)) - i32(dim(1u, 2u));
    let sw = dim(1u, 1u);
    let w0 = i32(ow0 * sw + j * dim(1u, 5u)) - i32(dim(1u, 3u));
    let h_in = h >= 0 && h < i32(g.h);
    let src_row = (b * g.h + u32(max(h, 0))) * g.w;
    let dst_row = row * g.ow;
    let end = min(ow0 + RUN, g.ow);
    for (var ow = ow0; ow < end; ow++) {
        let w = w0 + i32((ow - ow0) * sw);
        var v = 0.0;
        if (h_in && w >= 0 && w < i32(g.w)) {
            v = src[src_row + u32(w)];
        }
        dst[dst_row + ow] = v;
    }
}

// Window position along one axis that reads input coordinate `x` through
// kernel tap `i`, or -1: x = o·s + i·d − p, so o = (x + p − i·d) / s when
// that divides exactly and lands in [0, o_len). UNIT_STRIDE (s = 1) skips
// the division, which a SIMD CPU does lane by lane.
override UNIT_STRIDE: bool = false;

fn window_of(x: u32, i: u32, s: u32, p: u32, d: u32, o_len: u32) -> i32 {
    let t = i32(x + p) - i32(i * d);
    if (t < 0) { return -1; }
    var o = t;
    if (!UNIT_STRIDE) {
        if (t % i32(s) != 0) { return -1; }
        o = t / i32(s);
    }
    return select(-1, o, o < i32(o_len));
}

// One invocation per run of up to RUN input positions along a row of
// x[b, h, ·]: each position sums the cotangents of the window positions
// that read it, tap by tap. params.n: the number of runs.
@compute @workgroup_size(WG)
fn fold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_id(wid, lid, nwg);
    if (t >= params.n) { return; }
    let g = geometry();
    let runs = (g.w + RUN - 1u) / RUN;
    let row = t / runs;
    let w0 = (t - row * runs) * RUN;
    let h = row % g.h;
    let b = row / g.h;
    let len = min(w0 + RUN, g.w) - w0;
    var acc: array<f32, RUN>;
    for (var c = 0u; c < RUN; c++) {
        acc[c] = 0.0;
    }
    for (var i = 0u; i < g.kh; i++) {
        let oh = window_of(h, i, dim(1u, 0u), dim(1u, 2u), dim(1u, 4u), g.oh);
        if (oh < 0) { continue; }
        for (var j = 0u; j < g.kw; j++) {
            let base = (((b * g.kh + i) * g.kw + j) * g.oh + u32(oh)) * g.ow;
            for (var c = 0u; c < len; c++) {
                let ow = window_of(w0 + c, j, dim(1u, 1u), dim(1u, 3u), dim(1u, 5u), g.ow);
                if (ow >= 0) {
                    acc[c] += src[base + u32(ow)];
                }
            }
        }
    }
    for (var c = 0u; c < len; c++) {
        dst[row * g.w + w0 + c] = acc[c];
    }
}
