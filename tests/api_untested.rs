//! Public API that no other test exercised (issue 21): the operator sugar
//! and its documented panic, the fusion switches' getters, a custom op's
//! name and a custom op with the most inputs, `Device::with_options` by
//! adapter name and for a software adapter, `DeviceOptions::from_env`
//! awaited, and `gradcheck` with options other than the defaults.
mod common;

use common::*;
use pullback::{CustomOp, Device, DeviceOptions, GradcheckOptions, MAX_CUSTOM_INPUTS};

#[test]
fn operators_compute_what_the_methods_do() {
    let a = tensor(&[1.0, -2.0, 3.0], &[3]);
    let b = tensor(&[0.5, 4.0, -1.5], &[3]);
    assert_eq!(read(&(&a + &b)), vec![1.5, 2.0, 1.5]);
    assert_eq!(read(&(&a - &b)), vec![0.5, -6.0, 4.5]);
    assert_eq!(read(&(&a * &b)), vec![0.5, -8.0, -4.5]);
    assert_eq!(read(&(&a / &b)), vec![2.0, -0.5, -2.0]);
    assert_eq!(read(&(-&a)), vec![-1.0, 2.0, -3.0]);
    // Gradients flow through the sugar as through the methods.
    let x = tensor(&[2.0, 3.0], &[2]).requires_grad();
    let y = &(&x * &x) - &x; // x² − x: 2x − 1
    let g = ok(pullback::vjp(&[&y], &[&tensor(&[1.0, 1.0], &[2])], &[&x]));
    assert_eq!(read(&g[0]), vec![3.0, 5.0]);
}

#[test]
fn an_operator_on_mismatched_shapes_panics_as_documented() {
    let a = tensor(&[1.0, 2.0, 3.0], &[3]);
    let b = tensor(&[1.0, 2.0], &[2]);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| &a + &b));
    let payload = caught.expect_err("adding [3] and [2] must panic");
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(text.starts_with("add:") && text.contains("[3]"), "{text}");
    // The method returns the same refusal as an error.
    assert!(matches!(
        a.add(&b),
        Err(pullback::Error::ShapeMismatch { .. })
    ));
}

#[test]
fn the_fusion_switches_read_back_what_was_set() {
    let d = fresh_device();
    for on in [false, true] {
        d.set_fused_adjoints(on);
        d.set_fused_forward(on);
        assert_eq!((d.fused_adjoints(), d.fused_forward()), (on, on));
    }
}

/// A custom op of `MAX_CUSTOM_INPUTS` inputs: y = Σᵢ (i + 1)·xᵢ, whose
/// adjoint to input i is (i + 1)·ȳ.
#[test]
fn a_custom_op_with_the_most_inputs_and_its_name() {
    assert_eq!(MAX_CUSTOM_INPUTS, 4);
    let forward = "
@group(0) @binding(1) var<storage, read> x0: array<f32>;
@group(0) @binding(2) var<storage, read> x1: array<f32>;
@group(0) @binding(3) var<storage, read> x2: array<f32>;
@group(0) @binding(4) var<storage, read> x3: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let t = pb_thread(wid, nwg, li);
    if (t >= pb.threads) { return; }
    out[t] = x0[t] + 2.0 * x1[t] + 3.0 * x2[t] + 4.0 * x3[t];
}";
    let mut adjoint = String::from(
        "@group(0) @binding(1) var<storage, read> cot: array<f32>;
@group(0) @binding(2) var<storage, read_write> res: array<f32>;
",
    );
    for i in 0..4 {
        adjoint.push_str(&format!(
            "@compute @workgroup_size(64)
fn adjoint_{i}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {{
    let t = pb_thread(wid, nwg, li);
    if (t >= pb.threads) {{ return; }}
    res[t] = {}.0 * cot[t];
}}
",
            i + 1
        ));
    }
    let op = ok(CustomOp::builder("weighted sum of four")
        .inputs(4)
        .forward(forward)
        .adjoint(&adjoint)
        .build(dev()));
    assert_eq!(op.name(), "weighted sum of four");
    let xs: Vec<_> = (0..4)
        .map(|i| tensor(&[1.0 + i as f32, -0.5], &[2]).requires_grad())
        .collect();
    let refs: Vec<_> = xs.iter().collect();
    let y = ok(op.apply(&refs, &[]));
    // 1·1 + 2·2 + 3·3 + 4·4 = 30; −0.5·(1 + 2 + 3 + 4) = −5.
    assert_eq!(read(&y), vec![30.0, -5.0]);
    let v = tensor(&[1.0, -2.0, 0.5, 3.0], &[2, 2]);
    let g = ok(pullback::vjp_batched(&[&y], &[&v], &refs));
    for (i, gi) in g.iter().enumerate() {
        let w = (i + 1) as f32;
        assert_eq!(read(gi), vec![w, -2.0 * w, 0.5 * w, 3.0 * w], "input {i}");
    }
    // A fifth input is refused with the limit in the message.
    let five = CustomOp::builder("five")
        .inputs(5)
        .forward(forward)
        .adjoint(&adjoint);
    let e = expect_err(five.build(dev()), &["1 to 4"]);
    assert!(
        matches!(e, pullback::Error::InvalidArgument { .. }),
        "{e:?}"
    );
}

#[test]
fn with_options_by_adapter_name_and_for_a_software_adapter() {
    let name = dev().adapter_info().name.clone();
    // A substring of the adapter in use, in another case.
    let part: String = name.chars().take(4).collect::<String>().to_uppercase();
    let by_name = ok(pollster::block_on(Device::with_options(DeviceOptions {
        adapter: Some(part),
        ..DeviceOptions::default()
    })));
    assert_eq!(by_name.adapter_info().name, name);
    assert_usable(&by_name);
    // "software": a CPU adapter where there is one (lavapipe here; on a GPU
    // machine without one, the error lists what there is).
    let software = pollster::block_on(Device::with_options(DeviceOptions {
        adapter: Some("software".into()),
        ..DeviceOptions::default()
    }));
    match software {
        Ok(d) => {
            assert_eq!(
                d.adapter_info().device_type,
                pullback::wgpu::DeviceType::Cpu
            );
            assert_usable(&d);
        }
        Err(pullback::Error::AdapterNotFound { wanted, available }) => {
            assert_eq!(wanted, "software");
            assert!(!available.is_empty());
        }
        Err(e) => panic!("with_options(software): {e}"),
    }
    // from_env, awaited: the environment's choice (the test adapter).
    let from_env = ok(pollster::block_on(Device::with_options(
        DeviceOptions::from_env(),
    )));
    assert_usable(&from_env);
}

#[test]
fn gradcheck_with_options_other_than_the_defaults() {
    let x = tensor(&[0.3, -0.7, 1.1, 0.2], &[4]);
    let f = |t: &[pullback::Tensor]| t[0].tanh()?.mul(&t[0])?.sum_all();
    let options = GradcheckOptions {
        eps: 1e-3,
        rtol: 1e-3,
        atol: 1e-6,
        projections: 3,
        full_jacobian_max: 0, // projections and the batch check only
        batch: 5,
        seed: 7,
    };
    let report = ok(pullback::gradcheck(f, &[&x], options.clone()));
    assert!(report.is_ok(), "{report}");
    // 3 projections and 5 batched-vs-loop rows, no Jacobian columns.
    assert!(report.checked >= 3, "{} comparisons", report.checked);
    let full = ok(pullback::gradcheck(
        f,
        &[&x],
        GradcheckOptions {
            full_jacobian_max: 64,
            ..options
        },
    ));
    assert!(full.is_ok(), "{full}");
    assert!(
        full.checked > report.checked,
        "the full Jacobian adds comparisons"
    );
}
