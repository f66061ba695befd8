// Inclusive cumulative sum along one axis. The input is viewed as lines
// [outer, D, inner]: x0 = D, x1 = inner, x2 = the bits of 1.0
// (opaque_one), n = the number of lines (outer · inner, times K in the
// adjoint). REVERSE sums from the end: the adjoint of a cumulative sum is
// the reversed cumulative sum of the cotangent, gx[d] = Σ_{e >= d} g[e].
//
// A line is cut into blocks of x3 elements (at most LOOP_PIECE: lavapipe
// ends an invocation's loops after 65535 iterations in all). `scan_blocks`
// scans each (line, block) with Kahan compensation and writes the block's
// total; when a line has several blocks, `scan_totals` turns each line's
// totals into the sum of the blocks before each one, and `scan_offsets`
// adds that to every element of the block.

override REVERSE: bool = false;

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> totals: array<f32>;   // [lines, blocks]

// Element `s` (in scan order) of line `line`: its flat index.
fn scan_index(line: u32, s: u32) -> u32 {
    let d_len = params.x0;
    let inner = params.x1;
    let d = select(s, d_len - 1u - s, REVERSE);
    return (line / inner) * d_len * inner + line % inner + d * inner;
}

fn blocks_per_line() -> u32 {
    return (params.x0 + params.x3 - 1u) / params.x3;
}

@compute @workgroup_size(WG)
fn scan_blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(wid, lid, nwg);
    let nb = blocks_per_line();
    if (id >= params.n * nb) { return; }
    let line = id / nb;
    let block = id % nb;
    let start = block * params.x3;
    let end = min(start + params.x3, params.x0);
    let one = opaque_one();
    var sc = vec2(0.0);
    for (var s = start; s < end; s++) {
        sc = kahan_add(sc, src[scan_index(line, s)], one);
        dst[scan_index(line, s)] = sc.x;
    }
    totals[id] = sc.x;
}

// Each line's block totals become exclusive prefix sums (in place).
@compute @workgroup_size(WG)
fn scan_totals(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let line = linear_id(wid, lid, nwg);
    if (line >= params.n) { return; }
    let nb = blocks_per_line();
    let one = opaque_one();
    var sc = vec2(0.0);
    for (var b = 0u; b < nb; b++) {
        let t = totals[line * nb + b];
        totals[line * nb + b] = sc.x;
        sc = kahan_add(sc, t, one);
    }
}

// Adds the sum of the blocks before each element's block.
@compute @workgroup_size(WG)
fn scan_offsets(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_id(wid, lid, nwg);
    if (id >= params.n * params.x0) { return; }
    let line = id / params.x0;
    let s = id % params.x0;
    let nb = blocks_per_line();
    let i = scan_index(line, s);
    dst[i] = dst[i] + totals[line * nb + s / params.x3];
}
