//! The seed example: y = x·x at x = [2, 3], cotangent v = [1, 1].
use pullback::{Device, Result};

fn main() -> Result<()> {
    let dev = Device::new()?;
    let info = dev.adapter_info();
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    let x = dev.tensor(&[2.0, 3.0], &[2])?.requires_grad();
    let y = x.mul(&x)?;
    y.backward_with(&dev.tensor(&[1.0, 1.0], &[2])?)?;
    let grad = x.grad().expect("x is a leaf that y depends on").to_vec()?;
    let y = y.to_vec()?;
    println!("y = {y:?}");
    println!("x.grad = {grad:?}");
    assert_eq!(y, vec![4.0, 9.0]);
    assert_eq!(grad, vec![4.0, 6.0]);
    Ok(())
}
