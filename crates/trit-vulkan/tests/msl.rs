//! Every kernel must translate to Metal Shading Language with spirv-cross, so the Metal
//! backend can share them. spirv-cross missing is a failure unless TRIT_VULKAN_OPTIONAL=1.
//! MSL 2.1 (macOS 10.14 / iOS 12), the first with the SIMD-group functions the subgroup
//! kernels translate to. `_dot` variants use SPV_KHR_integer_dot_product, which spirv-cross
//! cannot express in MSL: Metal runs their plain twin (same name without `_dot`), which must
//! exist and translate. `_cm` variants use NVIDIA's cooperative matrices
//! (SPV_NV_cooperative_matrix), which spirv-cross cannot express either: the same rule
//! (a shape tag before `_cm`, as in `_n16_cm`, is dropped with it; `dx_q8_*`'s, `dx_q8p_*`'s
//! and `dx_q8pw_*`'s twin is `out_prod_*`, `mmtv_*`'s `mmt_*`, `mmqs_*`'s `mmq_*`, `out_prod_f16v_*`'s
//! `out_prod_f16_*`). The wide `NORM` mat-vecs keep their `_w`, `_w16` or `_w8` (`.._dot_w`'s
//! twin is `.._w`).

use std::process::Command;

#[test]
fn kernels_translate_to_msl() {
    if Command::new("spirv-cross").arg("--help").output().is_err() {
        if std::env::var("TRIT_VULKAN_OPTIONAL").is_ok_and(|v| v == "1") {
            eprintln!("\n!!!!!!!! SKIPPING MSL check: spirv-cross not installed (TRIT_VULKAN_OPTIONAL=1) !!!!!!!!\n");
            return;
        }
        panic!("spirv-cross is not installed (apt-get install spirv-cross; scripts/setup.sh does it)");
    }
    let dir = std::env::temp_dir().join(format!("trit-msl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failed = Vec::new();
    assert!(trit_vulkan::kernels().len() >= 20);
    let names: Vec<&str> = trit_vulkan::kernels().iter().map(|(n, _)| *n).collect();
    for (name, spv) in trit_vulkan::kernels() {
        // A `_cm` variant's shape tag (`_n16`: 16 x 16 x 32 fragments) goes with the suffix;
        // a wide `NORM` mat-vec's `_w` (`_w16`, `_w8`) stays (`.._dot_w`'s twin is `.._w`).
        let (base, wide) =
            ["_w", "_w16", "_w8"].iter().find_map(|w| name.strip_suffix(w).map(|b| (b, *w))).unwrap_or((*name, ""));
        if let Some(twin) =
            base.strip_suffix("_dot").or_else(|| base.strip_suffix("_n16_cm")).or_else(|| base.strip_suffix("_cm"))
        {
            let twin = format!("{twin}{wide}");
            // The int8 input gradient's twin (either form: `dx_q8p` takes dY quantized
            // beforehand) is the f32 OUT_PROD kernel of the same weight type.
            // The twin of the 128 x 128 f16 kernel is the f16 tile kernel (`mmt_`), that of
            // the 32-row ternary tiles the ternary tile kernel (`mmq_`).
            let twin = twin
                .replace("dx_q8pw_", "out_prod_")
                .replace("dx_q8p_", "out_prod_")
                .replace("dx_q8_", "out_prod_")
                .replace("mmtv_", "mmt_")
                .replace("mmqs_", "mmq_")
                .replace("out_prod_f16v", "out_prod_f16");
            assert!(names.contains(&twin.as_str()), "{name} has no plain twin {twin} for Metal");
            continue;
        }
        let path = dir.join(format!("{name}.spv"));
        std::fs::write(&path, spv).unwrap();
        let out = Command::new("spirv-cross").args(["--msl", "--msl-version", "20100"]).arg(&path).output().unwrap();
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("kernel void main0") {
            failed.push(format!("{name}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failed.is_empty(), "kernels that do not translate to MSL:\n{}", failed.join("\n"));
}
