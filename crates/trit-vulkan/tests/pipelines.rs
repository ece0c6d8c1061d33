//! Kernel pipelines are built on first use, not with the device, and every one the device
//! can run builds (the check device creation used to make by building them all).

mod common;

use common::*;

#[test]
fn pipelines_are_built_on_first_use_and_all_build() {
    let Some((_g, b)) = setup() else { return };
    let eager = std::env::var("TRIT_VULKAN_EAGER_PIPELINES").is_ok_and(|v| v == "1");
    let at_start = trit_vulkan::pipelines_built();
    println!("pipelines built with the device: {at_start} (eager: {eager})");
    if !eager {
        assert_eq!(at_start, 0, "the device built pipelines before any graph asked for one");
    }
    check_small_product(&b);
    let after_one = trit_vulkan::pipelines_built();
    println!("after one product: {after_one}");
    let (built, failed) = trit_vulkan::build_all_pipelines().expect("a device");
    println!("all: {built} built, rejected: {failed:?}");
    // Only a cooperative-matrix variant may be rejected by a driver (its plain twin runs).
    assert!(failed.iter().all(|f| f.split(':').next().is_some_and(|n| n.ends_with("_cm"))), "{failed:?}");
    assert!(built > 100, "only {built} pipelines");
    assert_eq!(trit_vulkan::pipelines_built(), built);
    if !eager {
        assert!(after_one > 0 && after_one < 10, "one product built {after_one} pipelines");
    }
}
