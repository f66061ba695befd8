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

@compute @workgroup_size(WG)
fn unfold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_id(wid, lid, nwg);
    if (o >= params.n) { return; }
    let h_len = dim(0u, 0u);
    let w_len = dim(0u, 1u);
    let oh_len = dim(0u, 2u);
    let ow_len = dim(0u, 3u);
    let kh = dim(0u, 4u);
    let kw = dim(0u, 5u);
    let ow = o % ow_len;
    let oh = (o / ow_len) % oh_len;
    let j = (o / (ow_len * oh_len)) % kw;
    let i = (o / (ow_len * oh_len * kw)) % kh;
    let b = o / (ow_len * oh_len * kw * kh);
    let h = i32(oh * dim(1u, 0u) + i * dim(1u, 4u)) - i32(dim(1u, 2u));
    let w = i32(ow * dim(1u, 1u) + j * dim(1u, 5u)) - i32(dim(1u, 3u));
    var v = 0.0;
    if (h >= 0 && h < i32(h_len) && w >= 0 && w < i32(w_len)) {
        v = src[b * h_len * w_len + u32(h) * w_len + u32(w)];
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
    let h_len = dim(0u, 0u);
    let w_len = dim(0u, 1u);
    let oh_len = dim(0u, 2u);
    let ow_len = dim(0u, 3u);
    let kh = dim(0u, 4u);
    let kw = dim(0u, 5u);
    let w = e % w_len;
    let h = (e / w_len) % h_len;
    let b = e / (w_len * h_len);
    var acc = 0.0;
    for (var i = 0u; i < kh; i++) {
        let oh = window_of(h, i, dim(1u, 0u), dim(1u, 2u), dim(1u, 4u), oh_len);
        if (oh < 0) { continue; }
        for (var j = 0u; j < kw; j++) {
            let ow = window_of(w, j, dim(1u, 1u), dim(1u, 3u), dim(1u, 5u), ow_len);
            if (ow < 0) { continue; }
            acc += src[(((b * kh + i) * kw + j) * oh_len + u32(oh)) * ow_len + u32(ow)];
        }
    }
    dst[e] = acc;
}
