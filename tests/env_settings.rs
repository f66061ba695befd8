//! The environment `Device::new` reads: `PULLBACK_FUSION` (off, 0, false,
//! no turn both fusions off) and `PULLBACK_GEMM` (a schedule, or `tune`:
//! the GEMM autotune before the device's first matrix product, none at
//! creation). One test in its own binary: it sets process-wide variables,
//! which no other test may see change under it.
mod common;

use common::*;
use pullback::{Device, GemmKernel};

/// Sets (or with None removes) a variable for the devices made next.
fn set(name: &str, value: Option<&str>) {
    // SAFETY: this binary's only test runs on one thread while it sets them.
    unsafe {
        match value {
            Some(v) => std::env::set_var(name, v),
            None => std::env::remove_var(name),
        }
    }
}

#[test]
fn device_new_applies_pullback_fusion_and_pullback_gemm() {
    for off in ["off", "0", "false", "NO"] {
        set("PULLBACK_FUSION", Some(off));
        let d = fresh_device();
        assert!(
            !d.fused_adjoints() && !d.fused_forward(),
            "PULLBACK_FUSION={off}"
        );
        assert_usable(&d);
    }
    set("PULLBACK_FUSION", Some("on"));
    let d = fresh_device();
    assert!(d.fused_adjoints() && d.fused_forward());
    set("PULLBACK_FUSION", None);
    let d = fresh_device();
    assert!(
        d.fused_adjoints() && d.fused_forward(),
        "fusion is on by default"
    );

    set("PULLBACK_GEMM", Some("tiles"));
    assert_eq!(fresh_device().gemm_kernel(), GemmKernel::Tiles);

    // tune: nothing runs at creation; the first product runs the autotune's
    // probes first, the second product only itself.
    set("PULLBACK_GEMM", Some("tune"));
    let d: Device = fresh_device();
    assert_eq!(d.stats().dispatches, 0, "creating a device runs no kernel");
    let a = ok(d.tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2]));
    let b = ok(d.tensor(&[0.5, -1.0, 2.0, 0.25], &[2, 2]));
    let first = ok(a.matmul(&b));
    assert_eq!(read(&first), vec![4.5, -0.5, 9.5, -2.0]);
    let tuned = d.stats().dispatches;
    // 3 sizes × 2 schedules × (1 warm-up + 3 timed) products at least.
    assert!(tuned >= 24, "{tuned} dispatches: the autotune did not run");
    let second = ok(b.matmul(&a));
    assert_eq!(read(&second), vec![-2.5, -3.0, 2.75, 5.0]);
    assert_eq!(d.stats().dispatches - tuned, 1, "the autotune ran twice");
    // Unset: the default choice, as set_gemm_kernel(Auto) resolves it.
    set("PULLBACK_GEMM", None);
    let auto = fresh_device();
    ok(auto.set_gemm_kernel(GemmKernel::Auto));
    assert_eq!(fresh_device().gemm_kernel(), auto.gemm_kernel());
}
