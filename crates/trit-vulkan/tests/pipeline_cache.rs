//! The pipeline cache on disk (`src/pipeline_cache.rs`), across processes: this test runs the
//! ignored test `child_computes_a_product` in child processes of its own binary, each a fresh
//! device, with TRIT_VULKAN_PIPELINE_CACHE pointing at a temporary directory.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A child's report: (file, bytes loaded, bytes saved), or None without a device.
fn run_child(env: &[(&str, &Path)], cache: Option<&str>) -> Option<(String, u64, u64)> {
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--ignored", "--exact", "child_computes_a_product", "--nocapture", "--test-threads", "1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cache {
        Some(v) => cmd.env("TRIT_VULKAN_PIPELINE_CACHE", v),
        None => cmd.env_remove("TRIT_VULKAN_PIPELINE_CACHE"),
    };
    let out = cmd.output().expect("the child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    if text.contains("CACHE no device") {
        return None;
    }
    let line = text.lines().find(|l| l.starts_with("CACHE ")).unwrap_or_else(|| panic!("no report in:\n{text}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    Some((f[1].to_string(), f[2].parse().unwrap(), f[3].parse().unwrap()))
}

#[test]
fn pipelines_are_cached_on_disk_across_processes() {
    let dir = std::env::temp_dir().join(format!("trit-pc-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = dir.join("cache");
    let cache_s = cache.to_str().expect("a UTF-8 path");

    // A first process: nothing to load; what it built is saved.
    let Some((file, loaded, saved)) = run_child(&[], Some(cache_s)) else {
        println!("no Vulkan device: nothing to check");
        return;
    };
    println!("first: {file}, loaded {loaded}, saved {saved}");
    assert_eq!(loaded, 0, "a cache was loaded before one was written");
    assert!(file.starts_with(cache_s) && file.contains("vk-pipelines-"), "{file}");
    let data = std::fs::read(&file).expect("the cache file was written");
    assert_eq!(data.len() as u64, saved);
    assert!(data.len() >= 32 && data[..4] == 32u32.to_le_bytes(), "not a pipeline cache header: {:?}", &data[..4]);

    // A second process loads it whole.
    let (file2, loaded, saved) = run_child(&[], Some(cache_s)).expect("a device");
    println!("second: loaded {loaded}, saved {saved}");
    assert_eq!(file2, file);
    assert_eq!(loaded, data.len() as u64, "the file was not loaded");

    // A damaged file is not handed to the driver; the product is still right (checked in the
    // child) and the file is written anew.
    let mut bad = data.clone();
    bad[20] ^= 0xFF; // inside the cache UUID
    std::fs::write(&file, &bad).expect("write");
    let (_, loaded, saved) = run_child(&[], Some(cache_s)).expect("a device");
    println!("damaged: loaded {loaded}, saved {saved}");
    assert_eq!(loaded, 0, "a damaged cache file was loaded");
    assert!(saved >= 32);
    assert_eq!(std::fs::read(&file).expect("rewritten")[16..32], data[16..32], "the file was not rewritten");

    // Off: no file anywhere, not even in the default place.
    let home = dir.join("xdg");
    let (file, loaded, saved) = run_child(&[("XDG_CACHE_HOME", &home)], Some("0")).expect("a device");
    assert_eq!((file.as_str(), loaded, saved), ("-", 0, 0));
    // (The driver may keep a cache of its own there: Mesa's is `mesa_shader_cache`.)
    assert!(!home.join("trit").exists(), "a cache was written with TRIT_VULKAN_PIPELINE_CACHE=0");
    // The default place: $XDG_CACHE_HOME/trit.
    let (file, _, saved) = run_child(&[("XDG_CACHE_HOME", &home)], None).expect("a device");
    assert!(file.starts_with(home.join("trit").to_str().unwrap()) && saved >= 32, "{file}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run by `pipelines_are_cached_on_disk_across_processes` in a child process: one product
/// against the CPU, then a report line `CACHE <file or -> <loaded> <saved>`.
#[test]
#[ignore = "a child process of pipelines_are_cached_on_disk_across_processes"]
fn child_computes_a_product() {
    let Some((_g, b)) = setup() else {
        println!("CACHE no device");
        return;
    };
    check_small_product(&b);
    let (file, loaded, saved) = trit_vulkan::pipeline_cache_stats().expect("a device");
    let file = file.map_or("-".to_string(), |f| f.display().to_string());
    println!("CACHE {file} {loaded} {saved}");
}
