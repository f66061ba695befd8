// The elementwise binary ops' math, shared by the binary kernels
// (binary.wgsl) and the fused kernels (src/ops/elementwise/codegen.rs): op
// codes, each op's f and partial derivatives, and the dispatchers by op
// code. No bindings and no entry points (see unary_ops.wgsl).

const ADD: u32 = 0u;
const SUB: u32 = 1u;
const MUL: u32 = 2u;
const DIV: u32 = 3u;
const MAXIMUM: u32 = 4u;
const MINIMUM: u32 = 5u;
const POW: u32 = 6u;
// Comparisons: 1.0 where true, 0.0 where false (NaN compares false). They
// carry no gradient and are never recorded.
const GT: u32 = 7u;
const LT: u32 = 8u;
const GE: u32 = 9u;
const LE: u32 = 10u;
const EQ: u32 = 11u;
// where_cond's halves: a where b != 0 (else 0), a where b == 0 (else 0);
// their sum selects without multiplying the other side (inf·0, NaN·0).
const KEEP_WHERE: u32 = 12u;
const DROP_WHERE: u32 = 13u;

fn mask(c: vec4<bool>) -> vec4<f32> { return select(vec4(0.0), vec4(1.0), c); }

fn pow4(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return vec4(pow_real(a.x, b.x), pow_real(a.y, b.y), pow_real(a.z, b.z), pow_real(a.w, b.w));
}

fn nan4() -> vec4<f32> { return bitcast<vec4<f32>>(vec4(NAN_BITS)); }

// The share of maximum(a, b)'s gradient that goes to a: 1 where a wins,
// 1/2 at a tie (PyTorch's convention), 0 where b wins; where a or b is NaN
// neither wins and both get all of it (as in PyTorch, which masks by
// comparisons that NaN fails). minimum: the same with the order reversed.
fn winner_share(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return select(select(vec4(1.0), vec4(0.0), a < b), vec4(0.5), a == b);
}

// Each op's f(a, b) and partial derivatives df/da, df/db, with one
// signature. The dispatchers below call them by op code; the fused kernels
// (src/ops/elementwise/codegen.rs) call them by name (see unary_ops.wgsl).
// d/da: 1, 1, b, 1/b; max/min shares; b·a^(b−1); 1 for the comparisons
// (never differentiated); a mask for where_cond's halves. d/db: 1, −1, a,
// −a/b² (as −(a/b)/b, which overflows later); max/min shares; a^b·ln a (0
// where a = 0 and b >= 0, PyTorch's choice: the limit from a > 0); 0 for
// comparisons and masks (no gradient). maximum/minimum of a NaN is NaN
// (PyTorch's).
fn binary_add_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return a + b; }
fn binary_add_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(1.0); }
fn binary_add_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(1.0); }
fn binary_sub_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return a - b; }
fn binary_sub_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(1.0); }
fn binary_sub_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(-1.0); }
fn binary_mul_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return a * b; }
fn binary_mul_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return b; }
fn binary_mul_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return a; }
fn binary_div_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return a / b; }
fn binary_div_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return 1.0 / b; }
fn binary_div_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return -(a / b) / b; }
fn binary_maximum_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return select(max(a, b), nan4(), is_nan4(a) | is_nan4(b)); }
fn binary_maximum_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return winner_share(a, b); }
fn binary_maximum_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return winner_share(b, a); }
fn binary_minimum_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return select(min(a, b), nan4(), is_nan4(a) | is_nan4(b)); }
fn binary_minimum_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return winner_share(b, a); }
fn binary_minimum_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return winner_share(a, b); }
fn binary_pow_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return pow4(a, b); }
fn binary_pow_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return b * pow4(a, b - 1.0); }
fn binary_pow_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return select(pow4(a, b) * log(a), vec4(0.0), a == vec4(0.0) & b >= vec4(0.0));
}
fn binary_gt_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return mask(a > b); }
fn binary_gt_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(1.0); }
fn binary_gt_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(0.0); }
fn binary_lt_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return mask(a < b); }
fn binary_lt_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(1.0); }
fn binary_lt_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(0.0); }
fn binary_ge_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return mask(a >= b); }
fn binary_ge_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(1.0); }
fn binary_ge_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(0.0); }
fn binary_le_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return mask(a <= b); }
fn binary_le_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(1.0); }
fn binary_le_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(0.0); }
fn binary_eq_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return mask(a == b); }
fn binary_eq_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(1.0); }
fn binary_eq_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(0.0); }
fn binary_keep_where_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return select(vec4(0.0), a, b != vec4(0.0)); }
fn binary_keep_where_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return mask(b != vec4(0.0)); }
fn binary_keep_where_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(0.0); }
fn binary_drop_where_f(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return select(a, vec4(0.0), b != vec4(0.0)); }
fn binary_drop_where_da(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return mask(b == vec4(0.0)); }
fn binary_drop_where_db(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> { return vec4(0.0); }

fn binary_f(op: u32, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    switch op {
        case ADD: { return binary_add_f(a, b); }
        case SUB: { return binary_sub_f(a, b); }
        case MUL: { return binary_mul_f(a, b); }
        case DIV: { return binary_div_f(a, b); }
        case MAXIMUM: { return binary_maximum_f(a, b); }
        case MINIMUM: { return binary_minimum_f(a, b); }
        case POW: { return binary_pow_f(a, b); }
        case GT: { return binary_gt_f(a, b); }
        case LT: { return binary_lt_f(a, b); }
        case GE: { return binary_ge_f(a, b); }
        case LE: { return binary_le_f(a, b); }
        case EQ: { return binary_eq_f(a, b); }
        case KEEP_WHERE: { return binary_keep_where_f(a, b); }
        case DROP_WHERE: { return binary_drop_where_f(a, b); }
        default: { return a; }
    }
}
fn binary_da(op: u32, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    switch op {
        case ADD: { return binary_add_da(a, b); }
        case SUB: { return binary_sub_da(a, b); }
        case MUL: { return binary_mul_da(a, b); }
        case DIV: { return binary_div_da(a, b); }
        case MAXIMUM: { return binary_maximum_da(a, b); }
        case MINIMUM: { return binary_minimum_da(a, b); }
        case POW: { return binary_pow_da(a, b); }
        case GT: { return binary_gt_da(a, b); }
        case LT: { return binary_lt_da(a, b); }
        case GE: { return binary_ge_da(a, b); }
        case LE: { return binary_le_da(a, b); }
        case EQ: { return binary_eq_da(a, b); }
        case KEEP_WHERE: { return binary_keep_where_da(a, b); }
        case DROP_WHERE: { return binary_drop_where_da(a, b); }
        default: { return vec4(1.0); }
    }
}
fn binary_db(op: u32, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    switch op {
        case ADD: { return binary_add_db(a, b); }
        case SUB: { return binary_sub_db(a, b); }
        case MUL: { return binary_mul_db(a, b); }
        case DIV: { return binary_div_db(a, b); }
        case MAXIMUM: { return binary_maximum_db(a, b); }
        case MINIMUM: { return binary_minimum_db(a, b); }
        case POW: { return binary_pow_db(a, b); }
        case GT: { return binary_gt_db(a, b); }
        case LT: { return binary_lt_db(a, b); }
        case GE: { return binary_ge_db(a, b); }
        case LE: { return binary_le_db(a, b); }
        case EQ: { return binary_eq_db(a, b); }
        case KEEP_WHERE: { return binary_keep_where_db(a, b); }
        case DROP_WHERE: { return binary_drop_where_db(a, b); }
        default: { return vec4(0.0); }
    }
}
