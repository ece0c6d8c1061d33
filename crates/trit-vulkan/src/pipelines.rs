//! Compute pipelines, each created the first time a graph (or a kernel choice) asks for it.
//!
//! The build embeds ~220 kernel variants; a model's decode and prompt graphs use a few
//! dozen. Creating every pipeline with the device cost 9 s of start-up per process on a
//! 2-core VM's lavapipe, and on an H100 with a cold driver cache a minute or more (the op
//! tests' first run took 99–122 s against 14–15 s once the driver had cached them). So the
//! device only records which variants it can run (`usable`, as before) and each pipeline is
//! built on first use; a variant the driver rejects is then absent, as it was when the
//! device built everything up front: `has` answers false for it, and `get` names the failed
//! call. `TRIT_VULKAN_EAGER_PIPELINES=1` builds them all with the device, as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use ash::vk;

use crate::error::{Error, Result};

struct Slot {
    spv: &'static [u8],
    made: OnceLock<std::result::Result<vk::Pipeline, vk::Result>>,
}

impl Slot {
    /// The pipeline of kernel `name` (this slot's), built the first time it is asked for.
    fn make(
        &self,
        device: &ash::Device,
        layout: vk::PipelineLayout,
        cache: vk::PipelineCache,
        fresh: &AtomicBool,
        name: &str,
    ) -> std::result::Result<vk::Pipeline, vk::Result> {
        *self.made.get_or_init(|| {
            let made = create(device, layout, cache, self.spv);
            if made.is_ok() {
                fresh.store(true, Ordering::Relaxed);
            }
            match made {
                // A cooperative-matrix variant the driver rejects is left out (its plain twin runs).
                Err(e) if name.ends_with("_cm") => {
                    tracing::warn!(kernel = name, error = ?e, "trit-vulkan: cooperative-matrix kernel not built")
                }
                Err(e) => tracing::error!(kernel = name, error = ?e, "trit-vulkan: kernel not built"),
                Ok(_) => tracing::trace!(kernel = name, "trit-vulkan: pipeline built"),
            }
            made
        })
    }
}

/// The usable kernel variants of a device and the pipelines built so far.
pub(crate) struct Pipelines {
    slots: HashMap<&'static str, Slot>,
    /// Where pipelines are created through (`pipeline_cache.rs`; null: no cache).
    cache: vk::PipelineCache,
    /// Whether a pipeline was built since `take_fresh` last asked.
    fresh: AtomicBool,
}

impl Pipelines {
    /// Every kernel of the build that `usable` accepts and that reads no binding beyond the
    /// layout's `binding_count`; nothing is built yet.
    pub fn new(binding_count: u32, usable: &dyn Fn(&str) -> bool, cache: vk::PipelineCache) -> Pipelines {
        let slots = crate::kernels::SPIRV
            .iter()
            .filter(|(n, s)| usable(n) && max_binding(s) < binding_count)
            .map(|&(n, spv)| (n, Slot { spv, made: OnceLock::new() }))
            .collect();
        Pipelines { slots, cache, fresh: AtomicBool::new(false) }
    }

    /// Whether pipelines were built since the last call (the cache then has new entries).
    pub fn take_fresh(&self) -> bool {
        self.fresh.swap(false, Ordering::Relaxed)
    }

    /// Build every usable pipeline now (`TRIT_VULKAN_EAGER_PIPELINES=1`, `build_all`).
    /// Returns how many exist afterwards and the variants the driver rejected.
    pub fn build_all(&self, device: &ash::Device, layout: vk::PipelineLayout) -> (usize, Vec<String>) {
        let mut slots: Vec<_> = self.slots.iter().collect();
        slots.sort_unstable_by_key(|(n, _)| **n);
        let mut failed = Vec::new();
        for (n, slot) in slots {
            if let Err(e) = slot.make(device, layout, self.cache, &self.fresh, n) {
                failed.push(format!("{n}: {e}"));
            }
        }
        (self.slots.len() - failed.len(), failed)
    }

    /// Whether `name` is a usable variant the driver builds (building it if needed).
    pub fn has(&self, device: &ash::Device, layout: vk::PipelineLayout, name: &str) -> bool {
        self.slots.get(name).is_some_and(|slot| slot.make(device, layout, self.cache, &self.fresh, name).is_ok())
    }

    /// The pipeline of `name`, built on first use.
    pub fn get(&self, device: &ash::Device, layout: vk::PipelineLayout, name: &str) -> Result<vk::Pipeline> {
        let slot = self.slots.get(name).ok_or_else(|| Error::MissingKernel(name.to_string()))?;
        slot.make(device, layout, self.cache, &self.fresh, name)
            .map_err(|result| Error::Vk { call: "vkCreateComputePipelines", result })
    }

    /// Pipelines built so far.
    pub fn built(&self) -> usize {
        self.slots.values().filter(|s| matches!(s.made.get(), Some(Ok(_)))).count()
    }

    /// Destroy every pipeline built (the device is idle).
    pub fn destroy(&mut self, device: &ash::Device) {
        for slot in self.slots.values_mut() {
            if let Some(Ok(p)) = slot.made.take() {
                // SAFETY: the caller idled the device; the pipeline is not used again.
                unsafe { device.destroy_pipeline(p, None) };
            }
        }
    }
}

fn create(
    device: &ash::Device,
    layout: vk::PipelineLayout,
    cache: vk::PipelineCache,
    spv: &[u8],
) -> std::result::Result<vk::Pipeline, vk::Result> {
    let words: Vec<u32> = spv.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    // SAFETY: SPIR-V produced by glslc at build time.
    let module = unsafe { device.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None) }?;
    let stage =
        vk::PipelineShaderStageCreateInfo::default().stage(vk::ShaderStageFlags::COMPUTE).module(module).name(c"main");
    let ci = [vk::ComputePipelineCreateInfo::default().stage(stage).layout(layout)];
    // SAFETY: valid create info; the module may be destroyed once the pipeline exists. The
    // cache (or null) belongs to this device; Vulkan synchronises its use by several threads.
    let made = unsafe { device.create_compute_pipelines(cache, &ci, None) };
    // SAFETY: the module is no longer needed.
    unsafe { device.destroy_shader_module(module, None) };
    made.map(|p| p[0]).map_err(|(_, e)| e)
}

/// The highest `Binding` decoration in a SPIR-V module (0 if none).
fn max_binding(spv: &[u8]) -> u32 {
    let words: Vec<u32> = spv.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let mut i = 5; // after the header
    let mut max = 0;
    while i < words.len() {
        let (count, opcode) = ((words[i] >> 16) as usize, words[i] & 0xFFFF);
        // OpDecorate %target Binding N: opcode 71, decoration 33.
        if opcode == 71 && count >= 4 && words[i + 2] == 33 {
            max = max.max(words[i + 3]);
        }
        i += count.max(1);
    }
    max
}
