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
// params.n: output elements (unfold) or input elements (fold).

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

@compute @workgroup_size(WG)
fn unfold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_id(wid, lid, nwg);
    if (o >= params.n) { return; }
    let g = geometry();
    let ow = o % g.ow;
    let oh = (o / g.ow) % g.oh;
    let j = (o / (g.ow * g.oh)) % g.kw;
    let i = (o / (g.ow * g.oh * g.kw)) % g.kh;
    let b = o / (g.ow * g.oh * g.kw * g.kh);
    let h = i32(oh * dim(1u, 0u) + i * dim(1u, 4u)) - i32(dim(1u, 2u));
    let w = i32(ow * dim(1u, 1u) + j * dim(1u, 5u)) - i32(dim(1u, 3u));
    var v = 0.0;
    if (h >= 0 && h < i32(g.h) && w >= 0 && w < i32(g.w)) {
        v = src[(b * g.h + u32(h)) * g.w + u32(w)];
    }
    dst[o] = v;
}

// Window position along one axis that reads input coordinate `x` through
// kernel tap `i`, or -1: x = o·s + i·d − p, so o = (x + p − i·d) / s when
// that divides exactly and lands in [0, o_len).
fn window_of(x: u32, i: u32, s: u32, p: u32, d: u32, o_len: u32) -> i32 {
    let t = i32(x + p) - i32(i * d);
    if (t < 0 || t % i32(s) != 0) { return -1; }
    let o = t / i32(s);
    return select(-1, o, o < i32(o_len));
}

@compute @workgroup_size(WG)
fn fold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_id(wid, lid, nwg);
    if (e >= params.n) { return; }
    let g = geometry();
    let w = e % g.w;
    let h = (e / g.w) % g.h;
    let b = e / (g.w * g.h);
    var acc = 0.0;
    for (var i = 0u; i < g.kh; i++) {
        let oh = window_of(h, i, dim(1u, 0u), dim(1u, 2u), dim(1u, 4u), g.oh);
        if (oh < 0) { continue; }
        for (var j = 0u; j < g.kw; j++) {
            let ow = window_of(w, j, dim(1u, 1u), dim(1u, 3u), dim(1u, 5u), g.ow);
            if (ow < 0) { continue; }
            acc += src[(((b * g.kh + i) * g.kw + j) * g.oh + u32(oh)) * g.ow + u32(ow)];
        }
    }
    dst[e] = acc;
}
