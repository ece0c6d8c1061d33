//! The Vulkan device: instance, physical-device choice, logical device, queue, pipelines,
//! memory, and host<->device transfers.

use std::ffi::{c_char, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use ash::vk;

use crate::error::{Error, Result, VkContext};
use crate::transfer::Transfer;

/// Limits the dispatch code tiles against. Start at the device's values; tests lower them.
pub(crate) struct Limits {
    pub max_wg_x: AtomicU32,
    pub max_range: AtomicU64,
    pub force_staging: AtomicBool,
    /// Use the subgroup mat-vec kernels (off: the first, plain kernels; for A/B and tests).
    pub fast_mv: AtomicBool,
    /// Use the packed int8 dot-product variants where the device has them.
    pub int_dot: AtomicBool,
    /// Large ternary prompt products in 128 x 64 tiles instead of 64 x 64.
    pub mmq_big: AtomicBool,
    /// Use the cooperative-matrix (`_cm`) variants where the device has them.
    pub coopmat: AtomicBool,
    /// Tests: run the ternary prompt products through the `_emu` (8: 16 x 8 fragments) or
    /// `_n16_emu` (16: 16 x 16) variants of the cooperative-matrix kernel (its tiling and
    /// scaling, matrix instructions emulated); 0: off.
    pub coopmat_emu: AtomicU32,
    /// Training's products (OUT_PROD, the LM head's f16 MUL_MAT) on the tensor-core kernel
    /// `out_prod_cm` too (TRIT_VULKAN_CM_TRAIN=1); off by default: slower on an H200 than
    /// the FMA kernels (README, "Tensor cores for training").
    pub cm_train: AtomicBool,
    /// The ternary input gradient as int8 tensor-core products (`dx_q8.comp`) where the device
    /// has int8 cooperative matrices; on by default, TRIT_VULKAN_DX_Q8=0 turns it off.
    pub dx_q8: AtomicBool,
}

/// One matrix shape the device's cooperative matrices (VK_NV_cooperative_matrix, subgroup
/// scope) support: D(m x n, `d`) = A(m x k, `a`) * B(k x n, `b`) + C(m x n, `c`); types as
/// `vk::ComponentTypeNV` numbers (0 f16, 1 f32, 3 s8, 5 s32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopMatShape {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub a: i32,
    pub b: i32,
    pub c: i32,
    pub d: i32,
}

pub(crate) struct Gpu {
    _entry: ash::Entry,
    instance: ash::Instance,
    pub pdev: vk::PhysicalDevice,
    pub device: ash::Device,
    pub queue: Mutex<vk::Queue>,
    pub queue_family: u32,
    pub name: CString,
    pub description: CString,
    pub device_id: CString,
    pub min_storage_align: u64,
    pub max_alloc: u64,
    pub hw_max_wg_x: u32,
    /// The device is a CPU implementation of Vulkan (lavapipe).
    pub is_cpu: bool,
    /// A discrete GPU: weights go to device-only memory through the staging buffer.
    discrete: bool,
    pub hw_max_range: u64,
    pub limits: Limits,
    /// VK_KHR_push_descriptor: descriptors are pushed into the command buffer per dispatch
    /// instead of allocated and written.
    pub push_desc: Option<ash::khr::push_descriptor::Device>,
    /// Subgroup basic + shuffle operations in compute shaders (the mat-vec kernels).
    pub subgroups: bool,
    /// Invocations per subgroup (the tensor-core kernels' tiles assume 32).
    pub subgroup_size: u32,
    /// shaderIntegerDotProduct (VK_KHR_shader_integer_dot_product) is enabled.
    pub has_int_dot: bool,
    /// VK_NV_cooperative_matrix is enabled (with the Vulkan memory model, float16/int8
    /// arithmetic and 8/16-bit storage the `_cm` kernels need): the shapes it lists. Empty:
    /// no `_cm` pipelines are built (TRIT_VULKAN_NO_COOPMAT=1 forces that).
    pub coopmat_shapes: Vec<CoopMatShape>,
    /// Storage-buffer bindings of the shared layout: `MAX_BINDINGS` (11), else 8, 5 or 4, the most the
    /// device allows.
    pub bindings: u32,
    /// Nanoseconds per timestamp tick, when the queue has timestamps (TRIT_VULKAN_PROFILE).
    pub timestamp_period: Option<f32>,
    has_budget: bool,
    pub(crate) mem_props: vk::PhysicalDeviceMemoryProperties,
    pub set_layout: vk::DescriptorSetLayout,
    pub pipeline_layout: vk::PipelineLayout,
    pipelines: crate::pipelines::Pipelines,
    /// The pipelines' cache, kept on disk (`pipeline_cache.rs`).
    disk_cache: crate::pipeline_cache::DiskCache,
    pub(crate) xfer: Mutex<Transfer>,
    /// Outputs the last graph copied to host memory (`outputs`).
    pub(crate) outputs: Mutex<crate::outputs::Published>,
}

// SAFETY: the Vulkan handles are plain identifiers; every use that Vulkan requires to be
// externally synchronised (queue submission, the transfer command buffer) is behind a Mutex.
unsafe impl Send for Gpu {}
// SAFETY: as above.
unsafe impl Sync for Gpu {}

/// A VkBuffer with its own memory; `mapped` is set when the memory is host-visible and
/// coherent (then copies are plain memcpy).
pub(crate) struct Allocation {
    pub buffer: vk::Buffer,
    pub memory: vk::DeviceMemory,
    pub size: u64,
    pub mapped: Option<*mut u8>,
}

fn rank(t: vk::PhysicalDeviceType) -> u32 {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => 0,
        vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
        vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
        vk::PhysicalDeviceType::CPU => 3,
        _ => 4,
    }
}

fn type_name(t: vk::PhysicalDeviceType) -> &'static str {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => "discrete GPU",
        vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated GPU",
        vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual GPU",
        vk::PhysicalDeviceType::CPU => "CPU",
        _ => "other",
    }
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

/// Fence waits that polled near the expected end (`Gpu::wait_fence_spin`) so far (tests).
pub(crate) static POLLED_WAITS: AtomicU64 = AtomicU64::new(0);

/// Bytes of device buffers made by `Gpu::alloc` and not yet freed, and their peak (this process).
/// Device buffers freed by this process so far: a recorded graph is replayed only while this
/// is unchanged (a freed buffer's handle may come back for another buffer).
pub(crate) static FREED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub(crate) static ALLOCATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub(crate) static PEAK_ALLOCATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A physical device trit's kernels can run on: its index, handle, properties, compute queue
/// family, and whether that queue has timestamps.
type Candidate = (usize, vk::PhysicalDevice, vk::PhysicalDeviceProperties, u32, bool);

/// The device to use: `TRIT_VULKAN_DEVICE=N`, else the best-ranked usable one (discrete >
/// integrated > virtual > CPU).
fn choose(instance: &ash::Instance) -> Result<Candidate> {
    // SAFETY: plain queries on a live instance.
    let pdevs = unsafe { instance.enumerate_physical_devices() }.vk("vkEnumeratePhysicalDevices")?;
    let mut candidates = Vec::new();
    for (i, &pd) in pdevs.iter().enumerate() {
        // SAFETY: pd comes from enumerate_physical_devices.
        let props = unsafe { instance.get_physical_device_properties(pd) };
        if props.api_version < vk::API_VERSION_1_1 {
            continue;
        }
        let mut f16 = vk::PhysicalDevice16BitStorageFeatures::default();
        let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut f16);
        // SAFETY: as above; the chain lives on the stack for the call.
        unsafe { instance.get_physical_device_features2(pd, &mut f2) };
        if f16.storage_buffer16_bit_access == vk::FALSE {
            continue;
        }
        // SAFETY: as above.
        let qf = unsafe { instance.get_physical_device_queue_family_properties(pd) };
        let Some(q) = qf.iter().position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE)) else {
            continue;
        };
        let ts = qf[q].timestamp_valid_bits > 0 && props.limits.timestamp_compute_and_graphics == vk::TRUE;
        candidates.push((i, pd, props, q as u32, ts));
    }
    let chosen = match env_u64("TRIT_VULKAN_DEVICE") {
        Some(n) => candidates.iter().find(|c| c.0 as u64 == n).ok_or_else(|| {
            Error::NoDevice(format!(
                "TRIT_VULKAN_DEVICE={n}, but there are {} devices (usable: {:?})",
                pdevs.len(),
                candidates.iter().map(|c| c.0).collect::<Vec<_>>()
            ))
        })?,
        None => candidates.iter().min_by_key(|c| (rank(c.2.device_type), c.0)).ok_or_else(|| {
            Error::NoDevice(format!(
                "{} physical devices, none with Vulkan 1.1, 16-bit storage and a compute queue",
                pdevs.len()
            ))
        })?,
    };
    Ok(*chosen)
}

/// The device [`Gpu::new`] uses, chosen but not created yet (an instance, no logical device,
/// no pipelines). Registration looks at it first, so a machine whose only Vulkan device is
/// lavapipe does not compile every kernel for a device it will not use (~5 s per process on
/// a 2-core VM), and creates the device from the same instance otherwise. Dropped unused, it
/// destroys its instance.
pub(crate) struct Chosen {
    entry: ash::Entry,
    instance: Option<ash::Instance>,
    dev: Candidate,
}

impl Chosen {
    pub(crate) fn open() -> Result<Chosen> {
        // SAFETY: loading libvulkan runs its initialisers; it is the documented way to use
        // the `loaded` feature and fails cleanly when there is no loader. TRIT_VULKAN_LOADER
        // names another loader library (tests point it at a missing file).
        let entry = match std::env::var_os("TRIT_VULKAN_LOADER") {
            Some(path) => unsafe { ash::Entry::load_from(&path) }.map_err(|e| Error::NoLoader(e.to_string())),
            None => unsafe { ash::Entry::load() }.map_err(|e| Error::NoLoader(e.to_string())),
        }?;
        let app = vk::ApplicationInfo::default()
            .application_name(c"trit")
            .engine_name(c"trit-vulkan")
            .api_version(vk::API_VERSION_1_1);
        let ici = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: valid create info; destroyed by the Gpu made from it, or by Drop.
        let instance = unsafe { entry.create_instance(&ici, None) }
            .map_err(|e| Error::NoDevice(format!("vkCreateInstance failed: {e}")))?;
        match choose(&instance) {
            Ok(dev) => Ok(Chosen { entry, instance: Some(instance), dev }),
            Err(e) => {
                // SAFETY: nothing was created from the instance.
                unsafe { instance.destroy_instance(None) };
                Err(e)
            }
        }
    }

    /// Whether it is a CPU implementation of Vulkan (lavapipe).
    pub(crate) fn is_cpu(&self) -> bool {
        self.dev.2.device_type == vk::PhysicalDeviceType::CPU
    }

    pub(crate) fn name(&self) -> String {
        // SAFETY: device_name is a NUL-terminated array filled by the driver.
        unsafe { CStr::from_ptr(self.dev.2.device_name.as_ptr()) }.to_string_lossy().into_owned()
    }

    /// Create the device, its queues and pipeline layout (pipelines are built on first use).
    pub(crate) fn into_gpu(mut self) -> Result<Gpu> {
        let instance = self.instance.take().expect("a Chosen holds its instance until here");
        match Gpu::with_instance(self.entry.clone(), instance.clone(), self.dev) {
            Ok(g) => Ok(g),
            Err(e) => {
                // SAFETY: nothing created from the instance survives a failed setup.
                unsafe { instance.destroy_instance(None) };
                Err(e)
            }
        }
    }
}

impl Drop for Chosen {
    fn drop(&mut self) {
        if let Some(i) = self.instance.take() {
            // SAFETY: unused: nothing was created from the instance.
            unsafe { i.destroy_instance(None) };
        }
    }
}

impl Gpu {
    pub fn new() -> Result<Gpu> {
        Chosen::open()?.into_gpu()
    }

    /// Whether it is a discrete GPU (its own memory behind a cache of its own).
    pub(crate) fn is_discrete(&self) -> bool {
        self.discrete
    }

    fn with_instance(entry: ash::Entry, instance: ash::Instance, chosen: Candidate) -> Result<Gpu> {
        let (index, pdev, props, queue_family, has_ts) = chosen;
        // SAFETY: device_name is a NUL-terminated array filled by the driver.
        let name = unsafe { CStr::from_ptr(props.device_name.as_ptr()) }.to_owned();

        // SAFETY: plain query.
        let exts = unsafe { instance.enumerate_device_extension_properties(pdev) }
            .vk("vkEnumerateDeviceExtensionProperties")?;
        let has_ext = |want: &CStr| {
            exts.iter().any(|e| {
                // SAFETY: extension_name is NUL-terminated.
                (unsafe { CStr::from_ptr(e.extension_name.as_ptr()) }) == want
            })
        };
        let has_budget = has_ext(vk::EXT_MEMORY_BUDGET_NAME);
        let off = |key: &str| std::env::var(key).is_ok_and(|v| v == "1");
        let has_push = has_ext(vk::KHR_PUSH_DESCRIPTOR_NAME) && !off("TRIT_VULKAN_NO_PUSH_DESCRIPTORS");
        let has_int_dot = has_ext(vk::KHR_SHADER_INTEGER_DOT_PRODUCT_NAME) && {
            let mut dot = vk::PhysicalDeviceShaderIntegerDotProductFeatures::default();
            let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut dot);
            // SAFETY: plain query with a stack chain.
            unsafe { instance.get_physical_device_features2(pdev, &mut f2) };
            dot.shader_integer_dot_product == vk::TRUE
        };
        let coopmat_shapes =
            if off("TRIT_VULKAN_NO_COOPMAT") { Vec::new() } else { coopmat_support(&entry, &instance, pdev, &has_ext) };
        let has_coopmat = !coopmat_shapes.is_empty();
        let mut ext_names: Vec<*const c_char> = Vec::new();
        if has_coopmat {
            for e in COOPMAT_EXTENSIONS {
                ext_names.push(e.as_ptr());
            }
        }
        if has_budget {
            ext_names.push(vk::EXT_MEMORY_BUDGET_NAME.as_ptr());
        }
        if has_push {
            ext_names.push(vk::KHR_PUSH_DESCRIPTOR_NAME.as_ptr());
        }
        if has_int_dot {
            ext_names.push(vk::KHR_SHADER_INTEGER_DOT_PRODUCT_NAME.as_ptr());
        }
        let prio = [1.0f32];
        let qci = [vk::DeviceQueueCreateInfo::default().queue_family_index(queue_family).queue_priorities(&prio)];
        let mut f16 = vk::PhysicalDevice16BitStorageFeatures::default().storage_buffer16_bit_access(true);
        let mut dot = vk::PhysicalDeviceShaderIntegerDotProductFeatures::default().shader_integer_dot_product(true);
        let mut dci = vk::DeviceCreateInfo::default()
            .queue_create_infos(&qci)
            .enabled_extension_names(&ext_names)
            .push_next(&mut f16);
        if has_int_dot {
            dci = dci.push_next(&mut dot);
        }
        let mut cm = vk::PhysicalDeviceCooperativeMatrixFeaturesNV::default().cooperative_matrix(true);
        let mut vmm = vk::PhysicalDeviceVulkanMemoryModelFeatures::default().vulkan_memory_model(true);
        let mut f16i8 = vk::PhysicalDeviceShaderFloat16Int8Features::default().shader_float16(true).shader_int8(true);
        let mut s8 = vk::PhysicalDevice8BitStorageFeatures::default().storage_buffer8_bit_access(true);
        if has_coopmat {
            dci = dci.push_next(&mut cm).push_next(&mut vmm).push_next(&mut f16i8).push_next(&mut s8);
        }
        // SAFETY: features and extensions were checked above; destroyed in Drop.
        let device = unsafe { instance.create_device(pdev, &dci, None) }.vk("vkCreateDevice")?;
        // SAFETY: queue 0 of a family we created.
        let queue = unsafe { device.get_device_queue(queue_family, 0) };

        let mut m3 = vk::PhysicalDeviceMaintenance3Properties::default();
        let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut m3);
        // SAFETY: plain query with a stack chain.
        unsafe { instance.get_physical_device_properties2(pdev, &mut p2) };
        let max_alloc = m3.max_memory_allocation_size;
        let mut sg = vk::PhysicalDeviceSubgroupProperties::default();
        let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut sg);
        // SAFETY: plain query with a stack chain.
        unsafe { instance.get_physical_device_properties2(pdev, &mut p2) };
        let subgroups = sg.supported_stages.contains(vk::ShaderStageFlags::COMPUTE)
            && sg.supported_operations.contains(vk::SubgroupFeatureFlags::BASIC | vk::SubgroupFeatureFlags::SHUFFLE)
            && sg.subgroup_size.is_power_of_two()
            && (1..=128).contains(&sg.subgroup_size)
            && !off("TRIT_VULKAN_NO_SUBGROUPS");
        // SAFETY: plain query.
        let mem_props = unsafe { instance.get_physical_device_memory_properties(pdev) };

        let lim = props.limits;
        let hw_max_wg_x = lim.max_compute_work_group_count[0];
        let hw_max_range = lim.max_storage_buffer_range as u64;
        let limits = Limits {
            max_wg_x: AtomicU32::new(
                env_u64("TRIT_VULKAN_MAX_WG").map_or(hw_max_wg_x, |v| v.clamp(1, hw_max_wg_x as u64) as u32),
            ),
            max_range: AtomicU64::new(
                env_u64("TRIT_VULKAN_MAX_RANGE").map_or(hw_max_range, |v| v.clamp(1024, hw_max_range)),
            ),
            force_staging: AtomicBool::new(std::env::var("TRIT_VULKAN_STAGING").is_ok_and(|v| v == "1")),
            fast_mv: AtomicBool::new(!off("TRIT_VULKAN_PLAIN_KERNELS")),
            int_dot: AtomicBool::new(!off("TRIT_VULKAN_NO_INT_DOT")),
            mmq_big: AtomicBool::new(off("TRIT_VULKAN_MMQ_BIG")),
            coopmat: AtomicBool::new(true),
            coopmat_emu: AtomicU32::new(0),
            cm_train: AtomicBool::new(std::env::var("TRIT_VULKAN_CM_TRAIN").is_ok_and(|v| v == "1")),
            dx_q8: AtomicBool::new(!std::env::var("TRIT_VULKAN_DX_Q8").is_ok_and(|v| v == "0")),
        };

        // Variants a device cannot run are not built into pipelines: `_dot` needs the
        // integer dot product, `mv_` subgroups (basic and shuffle).
        let wide_wg = lim.max_compute_work_group_invocations >= 1024 && lim.max_compute_work_group_size[0] >= 1024;
        // Binding 4 (fused residual / pre-multiplied norms) where the device allows 5 storage
        // buffers per stage (Vulkan guarantees 4).
        let allows =
            |n: u32| lim.max_per_stage_descriptor_storage_buffers >= n && lim.max_descriptor_set_storage_buffers >= n;
        // Every Vulkan device has 4; kernels reading bindings beyond the layout's are left out.
        let bindings = [crate::dispatch::MAX_BINDINGS, 8, 5].into_iter().find(|&n| allows(n)).unwrap_or(4);
        // The measurement kernels of `probe.rs` are built only when asked for.
        let probe = std::env::var("TRIT_VULKAN_PROBE").is_ok_and(|v| v == "1");
        let usable = |full: &str| {
            let name = crate::matvec::WIDE_SUFFIXES.iter().find_map(|w| full.strip_suffix(w)).unwrap_or(full);
            // The wide `NORM` mat-vecs (`_w`): 1024 invocations (and ~11 KiB of shared memory,
            // as every device has).
            (wide_wg || name == full)
                && (has_int_dot || !name.ends_with("_dot"))
                && (has_coopmat || !name.ends_with("_cm"))
                && crate::matvec::cm_variant_usable(name, &coopmat_shapes, sg.subgroup_size)
                && (subgroups || !name.starts_with("mv_"))
                // The `NORM` mat-vecs give each lane of a block's cluster 256 / min(subgroup,
                // 32) elements, at most 32: subgroups of 8 lanes or more.
                && (sg.subgroup_size >= 8 || !crate::matvec::is_norm_mat_vec(name))
                && (wide_wg || !name.starts_with("mv_rms_norm")) // 1024 invocations
                && (probe || !name.starts_with("chain_probe")) // src/probe.rs only
        };
        let (set_layout, pipeline_layout) = create_layouts(&device, has_push, bindings)?;
        let disk_cache = crate::pipeline_cache::DiskCache::open(&device, &props);
        let pipelines = crate::pipelines::Pipelines::new(bindings, &usable, disk_cache.handle());
        if std::env::var("TRIT_VULKAN_EAGER_PIPELINES").is_ok_and(|v| v == "1") {
            pipelines.build_all(&device, pipeline_layout);
        }
        let push_desc = has_push.then(|| ash::khr::push_descriptor::Device::new(&instance, &device));
        let xfer = Transfer::new(&device, queue_family, &mem_props)?;

        let uuid: String = {
            let mut id = vk::PhysicalDeviceIDProperties::default();
            let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut id);
            // SAFETY: plain query with a stack chain.
            unsafe { instance.get_physical_device_properties2(pdev, &mut p2) };
            id.device_uuid.iter().map(|b| format!("{b:02x}")).collect()
        };
        let description = CString::new(format!(
            "{} (Vulkan {}.{}, {}, trit-vulkan)",
            name.to_string_lossy(),
            vk::api_version_major(props.api_version),
            vk::api_version_minor(props.api_version),
            type_name(props.device_type)
        ))
        .unwrap_or_default();
        tracing::info!(
            device = index,
            name = %name.to_string_lossy(),
            push_descriptors = has_push,
            subgroup_size = sg.subgroup_size,
            subgroups,
            int_dot = has_int_dot,
            coopmat = ?coopmat_shapes,
            "trit-vulkan: using device"
        );
        Ok(Gpu {
            _entry: entry,
            instance,
            pdev,
            device,
            queue: Mutex::new(queue),
            queue_family,
            name: CString::new("TritVulkan0").unwrap_or_default(),
            description,
            device_id: CString::new(format!("trit-vulkan:{uuid}")).unwrap_or_default(),
            min_storage_align: lim.min_storage_buffer_offset_alignment.max(4),
            max_alloc,
            hw_max_wg_x,
            is_cpu: props.device_type == vk::PhysicalDeviceType::CPU,
            discrete: props.device_type == vk::PhysicalDeviceType::DISCRETE_GPU,
            hw_max_range,
            limits,
            push_desc,
            subgroups,
            subgroup_size: sg.subgroup_size,
            has_int_dot,
            coopmat_shapes,
            bindings,
            timestamp_period: has_ts.then_some(lim.timestamp_period),
            has_budget,
            mem_props,
            set_layout,
            pipeline_layout,
            pipelines,
            disk_cache,
            xfer: Mutex::new(xfer),
            outputs: Mutex::new(Default::default()),
        })
    }

    /// Write the pipeline cache to disk if pipelines were built since the last save.
    pub fn save_pipeline_cache(&self) {
        if self.pipelines.take_fresh() {
            self.disk_cache.save(&self.device);
        }
    }

    /// The pipeline cache's file and bytes loaded from it / last saved to it.
    pub fn pipeline_cache_stats(&self) -> (Option<std::path::PathBuf>, u64, u64) {
        let (loaded, saved) = self.disk_cache.stats();
        (self.disk_cache.path().map(|p| p.to_path_buf()), loaded, saved)
    }

    /// The pipeline of kernel `name`, built on first use (`pipelines.rs`).
    pub fn pipeline(&self, name: &str) -> Result<vk::Pipeline> {
        self.pipelines.get(&self.device, self.pipeline_layout, name)
    }

    /// Build every pipeline this device can run now: (how many exist, the variants the
    /// driver rejected, with why).
    pub fn build_all_pipelines(&self) -> (usize, Vec<String>) {
        let all = self.pipelines.build_all(&self.device, self.pipeline_layout);
        self.save_pipeline_cache();
        all
    }

    /// Pipelines built so far.
    pub fn pipelines_built(&self) -> usize {
        self.pipelines.built()
    }

    /// The subgroup / integer kernels are in use (TRIT_VULKAN_PLAIN_KERNELS=1: not).
    pub fn fast_kernels(&self) -> bool {
        self.limits.fast_mv.load(Ordering::Relaxed)
    }

    /// The `_cm` kernels are built and in use (TRIT_VULKAN_NO_COOPMAT=1 or
    /// `set_coopmat(false)`: not).
    pub fn coopmat(&self) -> bool {
        !self.coopmat_shapes.is_empty() && self.limits.coopmat.load(Ordering::Relaxed)
    }

    /// Whether the device lists this cooperative-matrix shape (m, n, k, A/B type, C/D type).
    pub fn has_coopmat_shape(&self, m: u32, n: u32, k: u32, ab: vk::ComponentTypeNV, cd: vk::ComponentTypeNV) -> bool {
        lists_shape(&self.coopmat_shapes, m, n, k, ab, cd)
    }

    /// Whether a pipeline of this name exists on this device.
    pub fn has_pipeline(&self, name: &str) -> bool {
        self.pipelines.has(&self.device, self.pipeline_layout, name)
    }

    pub fn max_wg_x(&self) -> u32 {
        self.limits.max_wg_x.load(Ordering::Relaxed)
    }

    pub fn max_range(&self) -> u64 {
        self.limits.max_range.load(Ordering::Relaxed)
    }

    /// (free, total) bytes of device-local memory, from VK_EXT_memory_budget when present.
    pub fn memory(&self) -> (u64, u64) {
        let heaps = &self.mem_props.memory_heaps[..self.mem_props.memory_heap_count as usize];
        let local: Vec<usize> =
            (0..heaps.len()).filter(|&i| heaps[i].flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL)).collect();
        let total: u64 = local.iter().map(|&i| heaps[i].size).sum();
        if !self.has_budget {
            return (total, total);
        }
        let mut budget = vk::PhysicalDeviceMemoryBudgetPropertiesEXT::default();
        let mut p2 = vk::PhysicalDeviceMemoryProperties2::default().push_next(&mut budget);
        // SAFETY: the extension is enabled; stack chain.
        unsafe { self.instance.get_physical_device_memory_properties2(self.pdev, &mut p2) };
        let free = local.iter().map(|&i| budget.heap_budget[i].saturating_sub(budget.heap_usage[i])).sum();
        (free, total)
    }

    /// A storage buffer of `size` bytes in device-local memory (mapped if host-visible).
    pub fn alloc(&self, size: u64) -> Result<Allocation> {
        self.alloc_untracked(size).inspect(|a| {
            let now = ALLOCATED.fetch_add(a.size, Ordering::Relaxed) + a.size;
            PEAK_ALLOCATED.fetch_max(now, Ordering::Relaxed);
        })
    }

    fn alloc_untracked(&self, size: u64) -> Result<Allocation> {
        if size > self.max_alloc {
            return Err(Error::Alloc {
                size,
                reason: format!("larger than maxMemoryAllocationSize ({})", self.max_alloc),
            });
        }
        let staging = self.limits.force_staging.load(Ordering::Relaxed);
        let prefer_mapped = !self.discrete && !staging;
        Allocation::new(
            &self.device,
            &self.mem_props,
            size,
            vk::MemoryPropertyFlags::DEVICE_LOCAL,
            prefer_mapped,
            !staging,
        )
    }

    pub fn free(&self, a: &Allocation) {
        // Deferred transfers may still target this buffer.
        if let Err(e) = self.flush_transfers() {
            tracing::error!("trit-vulkan: flushing transfers before a free: {e}");
        }
        ALLOCATED.fetch_sub(a.size, Ordering::Relaxed);
        FREED.fetch_add(1, Ordering::Relaxed);
        self.invalidate_outputs();
        a.destroy(&self.device);
    }

    /// Submit one command buffer; signal `fence` (may be null) when it has finished.
    pub fn submit(&self, cmd: vk::CommandBuffer, fence: vk::Fence) -> Result<()> {
        self.flush_transfers()?;
        self.submit_raw(cmd, fence)
    }

    /// `submit` without flushing deferred transfers first (the flush itself).
    pub(crate) fn submit_raw(&self, cmd: vk::CommandBuffer, fence: vk::Fence) -> Result<()> {
        self.submit_cmds(&[cmd], fence)
    }

    /// Submit `cmds` in order in one submission, signalling `fence` (may be null) when all
    /// have finished; deferred transfers are the caller's business.
    pub(crate) fn submit_cmds(&self, cmds: &[vk::CommandBuffer], fence: vk::Fence) -> Result<()> {
        self.invalidate_outputs();
        let submit = vk::SubmitInfo::default().command_buffers(cmds);
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the queue is externally synchronised by the lock; the buffers are recorded
        // and idle (their previous submissions were waited for).
        unsafe { self.device.queue_submit(*q, &[submit], fence) }.vk("vkQueueSubmit")
    }

    /// An empty submission signalling `fence` once everything submitted before has finished.
    pub fn submit_empty(&self, fence: vk::Fence) -> Result<()> {
        self.flush_transfers()?;
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as in `submit`; no command buffers.
        unsafe { self.device.queue_submit(*q, &[vk::SubmitInfo::default()], fence) }.vk("vkQueueSubmit")
    }

    /// Submit one command buffer and block until it has finished.
    pub fn submit_and_wait(&self, cmd: vk::CommandBuffer, fence: vk::Fence) -> Result<()> {
        self.submit(cmd, fence)?;
        self.wait_fence(fence)
    }

    /// Block until `fence` is signalled, then reset it.
    pub(crate) fn wait_fence(&self, fence: vk::Fence) -> Result<()> {
        self.wait_fence_spin(fence, None)
    }

    /// Wait for `fence` and reset it. With `sleep_for` (the time the work is expected to
    /// take, e.g. the last replay of the same graph): sleep in vkWaitForFences for 3/4 of it,
    /// then poll the fence, so the host sees the end without a sleeping thread's wake-up
    /// latency (tens of microseconds per token on a discrete GPU; llama.cpp's Vulkan backend
    /// polls too). The poll gives way to a blocking wait after 50 ms.
    pub(crate) fn wait_fence_spin(&self, fence: vk::Fence, sleep_for: Option<std::time::Duration>) -> Result<()> {
        let d = &self.device;
        // SAFETY: waiting on, polling and resetting our own fence.
        unsafe {
            if let Some(t) = sleep_for {
                POLLED_WAITS.fetch_add(1, Ordering::Relaxed);
                let first = (t.as_nanos() as u64) / 4 * 3;
                match d.wait_for_fences(&[fence], true, first) {
                    Ok(()) | Err(vk::Result::TIMEOUT) => {}
                    Err(e) => return Err(crate::error::Error::Vk { call: "vkWaitForFences", result: e }),
                }
                let start = std::time::Instant::now();
                while !d.get_fence_status(fence).vk("vkGetFenceStatus")? {
                    if start.elapsed() > std::time::Duration::from_millis(50) {
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
            d.wait_for_fences(&[fence], true, u64::MAX).vk("vkWaitForFences")?;
            d.reset_fences(&[fence]).vk("vkResetFences")?;
        }
        Ok(())
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: last owner; the device is idled before anything is destroyed.
        unsafe {
            let _ = self.device.device_wait_idle();
            if let Ok(x) = self.xfer.get_mut() {
                self.device.destroy_fence(x.fence, None);
                self.device.destroy_command_pool(x.pool, None);
                x.staging.destroy(&self.device);
                if let Some(r) = &x.readback {
                    r.destroy(&self.device);
                }
            }
            self.save_pipeline_cache();
            self.pipelines.destroy(&self.device);
            self.disk_cache.destroy(&self.device);
            self.device.destroy_pipeline_layout(self.pipeline_layout, None);
            self.device.destroy_descriptor_set_layout(self.set_layout, None);
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

/// A resettable command pool with one primary command buffer and an unsignalled fence.
pub(crate) fn command_objects(
    device: &ash::Device,
    family: u32,
) -> Result<(vk::CommandPool, vk::CommandBuffer, vk::Fence)> {
    // SAFETY: plain object creation on a live device; the caller owns and destroys them.
    unsafe {
        let pool = device
            .create_command_pool(
                &vk::CommandPoolCreateInfo::default()
                    .queue_family_index(family)
                    .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER),
                None,
            )
            .vk("vkCreateCommandPool")?;
        let cmd = device
            .allocate_command_buffers(
                &vk::CommandBufferAllocateInfo::default()
                    .command_pool(pool)
                    .level(vk::CommandBufferLevel::PRIMARY)
                    .command_buffer_count(1),
            )
            .vk("vkAllocateCommandBuffers")?[0];
        let fence = device.create_fence(&vk::FenceCreateInfo::default(), None).vk("vkCreateFence")?;
        Ok((pool, cmd, fence))
    }
}

impl Allocation {
    /// A mapped buffer of `size` bytes in host-cached memory (fast for the CPU to read), or
    /// None where the device has no such memory or it cannot be had.
    pub(crate) fn host_cached(
        device: &ash::Device,
        mem: &vk::PhysicalDeviceMemoryProperties,
        size: u64,
    ) -> Option<Allocation> {
        let cached = vk::MemoryPropertyFlags::HOST_VISIBLE
            | vk::MemoryPropertyFlags::HOST_COHERENT
            | vk::MemoryPropertyFlags::HOST_CACHED;
        if !mem.memory_types[..mem.memory_type_count as usize].iter().any(|t| t.property_flags.contains(cached)) {
            return None;
        }
        match Allocation::new(device, mem, size, cached, true, true) {
            Ok(a) if a.mapped.is_some() => Some(a),
            Ok(a) => {
                a.destroy(device);
                None
            }
            Err(_) => None,
        }
    }

    pub(crate) fn new(
        device: &ash::Device,
        mem: &vk::PhysicalDeviceMemoryProperties,
        size: u64,
        want: vk::MemoryPropertyFlags,
        prefer_mapped: bool,
        map_if_possible: bool,
    ) -> Result<Allocation> {
        let size = size.max(4).next_multiple_of(4);
        let bci = vk::BufferCreateInfo::default()
            .size(size)
            .usage(
                vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::TRANSFER_SRC
                    | vk::BufferUsageFlags::TRANSFER_DST,
            )
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid create info; destroyed on every error path below and in `destroy`.
        let buffer = unsafe { device.create_buffer(&bci, None) }
            .map_err(|e| Error::Alloc { size, reason: format!("vkCreateBuffer: {e}") })?;
        // SAFETY: buffer is live.
        let req = unsafe { device.get_buffer_memory_requirements(buffer) };
        let types = &mem.memory_types[..mem.memory_type_count as usize];
        let mappable = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let allowed = |i: usize| req.memory_type_bits & (1 << i) != 0;
        let has = |i: usize, f: vk::MemoryPropertyFlags| types[i].property_flags.contains(f);
        // Memory types to try, best first. A discrete GPU's host-visible device-local memory
        // is often a small BAR window: there `want` without host visibility comes first.
        let mut order: Vec<usize> = Vec::new();
        let mut add = |pred: &dyn Fn(usize) -> bool| {
            for i in 0..types.len() {
                if allowed(i) && pred(i) && !order.contains(&i) {
                    order.push(i);
                }
            }
        };
        if prefer_mapped {
            add(&|i| has(i, want | mappable));
        } else {
            add(&|i| has(i, want) && !has(i, vk::MemoryPropertyFlags::HOST_VISIBLE));
        }
        add(&|i| has(i, want));
        add(&|_| true);
        let mut memory = None;
        let mut last_err = String::from("no compatible memory type");
        for &i in &order {
            let mai = vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(i as u32);
            // SAFETY: valid allocate info.
            match unsafe { device.allocate_memory(&mai, None) } {
                Ok(m) => {
                    memory = Some((m, i));
                    break;
                }
                Err(e) => last_err = format!("vkAllocateMemory (type {i}): {e}"),
            }
        }
        let Some((memory, ty)) = memory else {
            // SAFETY: buffer is live and unused.
            unsafe { device.destroy_buffer(buffer, None) };
            return Err(Error::Alloc { size, reason: last_err });
        };
        let cleanup = |reason: String| {
            // SAFETY: both objects are live and unused.
            unsafe {
                device.destroy_buffer(buffer, None);
                device.free_memory(memory, None);
            }
            Error::Alloc { size, reason }
        };
        // SAFETY: memory was allocated for this buffer's requirements.
        if let Err(e) = unsafe { device.bind_buffer_memory(buffer, memory, 0) } {
            return Err(cleanup(format!("vkBindBufferMemory: {e}")));
        }
        let mut mapped = None;
        if map_if_possible && types[ty].property_flags.contains(mappable) {
            // SAFETY: host-visible memory, mapped once for its lifetime.
            match unsafe { device.map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) } {
                Ok(p) => mapped = Some(p as *mut u8),
                Err(e) => return Err(cleanup(format!("vkMapMemory: {e}"))),
            }
        }
        Ok(Allocation { buffer, memory, size, mapped })
    }

    pub fn destroy(&self, device: &ash::Device) {
        // SAFETY: called once by the owner after the GPU stopped using the buffer.
        unsafe {
            device.destroy_buffer(self.buffer, None);
            device.free_memory(self.memory, None);
        }
    }
}

/// Whether `shapes` has (m, n, k) with A and B of type `ab`, C and D of type `cd`.
pub(crate) fn lists_shape(
    shapes: &[CoopMatShape],
    m: u32,
    n: u32,
    k: u32,
    ab: vk::ComponentTypeNV,
    cd: vk::ComponentTypeNV,
) -> bool {
    let (ab, cd) = (ab.as_raw(), cd.as_raw());
    shapes.iter().any(|s| (s.m, s.n, s.k, s.a, s.b, s.c, s.d) == (m, n, k, ab, ab, cd, cd))
}

/// Device extensions the `_cm` kernels need besides VK_NV_cooperative_matrix itself: their
/// SPIR-V declares the Vulkan memory model (GL_KHR_memory_scope_semantics), float16 and int8
/// arithmetic and 8-bit storage. All are core in Vulkan 1.2; the instance asks for 1.1, so
/// they are enabled as extensions.
const COOPMAT_EXTENSIONS: [&CStr; 4] = [
    vk::NV_COOPERATIVE_MATRIX_NAME,
    vk::KHR_VULKAN_MEMORY_MODEL_NAME,
    vk::KHR_SHADER_FLOAT16_INT8_NAME,
    vk::KHR_8BIT_STORAGE_NAME,
];

/// The subgroup-scope cooperative-matrix shapes of `pdev`, or none when it lacks any of the
/// extensions or features the `_cm` kernels need.
fn coopmat_support(
    entry: &ash::Entry,
    instance: &ash::Instance,
    pdev: vk::PhysicalDevice,
    has_ext: &dyn Fn(&CStr) -> bool,
) -> Vec<CoopMatShape> {
    if !COOPMAT_EXTENSIONS.iter().all(|e| has_ext(e)) {
        return Vec::new();
    }
    let mut cm = vk::PhysicalDeviceCooperativeMatrixFeaturesNV::default();
    let mut vmm = vk::PhysicalDeviceVulkanMemoryModelFeatures::default();
    let mut f16i8 = vk::PhysicalDeviceShaderFloat16Int8Features::default();
    let mut s8 = vk::PhysicalDevice8BitStorageFeatures::default();
    let mut f2 = vk::PhysicalDeviceFeatures2::default()
        .push_next(&mut cm)
        .push_next(&mut vmm)
        .push_next(&mut f16i8)
        .push_next(&mut s8);
    // SAFETY: plain query with a stack chain; every struct's extension is present.
    unsafe { instance.get_physical_device_features2(pdev, &mut f2) };
    let on = |b: vk::Bool32| b == vk::TRUE;
    if !(on(cm.cooperative_matrix)
        && on(vmm.vulkan_memory_model)
        && on(f16i8.shader_float16)
        && on(f16i8.shader_int8)
        && on(s8.storage_buffer8_bit_access))
    {
        return Vec::new();
    }
    let nv = ash::nv::cooperative_matrix::Instance::new(entry, instance);
    let query = nv.fp().get_physical_device_cooperative_matrix_properties_nv;
    let mut count = 0u32;
    // SAFETY: the two-call idiom of a query the extension (checked above) provides.
    if unsafe { query(pdev, &mut count, std::ptr::null_mut()) } != vk::Result::SUCCESS {
        return Vec::new();
    }
    let mut props = vec![vk::CooperativeMatrixPropertiesNV::default(); count as usize];
    // SAFETY: as above, into `count` default-initialised structs.
    if unsafe { query(pdev, &mut count, props.as_mut_ptr()) } != vk::Result::SUCCESS {
        return Vec::new();
    }
    props
        .iter()
        .take(count as usize)
        .filter(|p| p.scope == vk::ScopeNV::SUBGROUP)
        .map(|p| CoopMatShape {
            m: p.m_size,
            n: p.n_size,
            k: p.k_size,
            a: p.a_type.as_raw(),
            b: p.b_type.as_raw(),
            c: p.c_type.as_raw(),
            d: p.d_type.as_raw(),
        })
        .collect()
}

/// One descriptor-set layout (`binding_count` storage buffers, `MAX_BINDINGS` where the
/// device allows; most kernels use the first three) and one pipeline layout (128 bytes of
/// push constants), shared by every kernel's pipeline (`pipelines.rs`).
fn create_layouts(
    device: &ash::Device,
    push_descriptors: bool,
    binding_count: u32,
) -> Result<(vk::DescriptorSetLayout, vk::PipelineLayout)> {
    let bindings: Vec<_> = (0..binding_count)
        .map(|i| {
            vk::DescriptorSetLayoutBinding::default()
                .binding(i)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
        })
        .collect();
    // SAFETY: plain object creation; destroyed in Gpu::drop.
    let flags = if push_descriptors {
        vk::DescriptorSetLayoutCreateFlags::PUSH_DESCRIPTOR_KHR
    } else {
        vk::DescriptorSetLayoutCreateFlags::empty()
    };
    let set_layout = unsafe {
        device.create_descriptor_set_layout(
            &vk::DescriptorSetLayoutCreateInfo::default().flags(flags).bindings(&bindings),
            None,
        )
    }
    .vk("vkCreateDescriptorSetLayout")?;
    let ranges = [vk::PushConstantRange {
        stage_flags: vk::ShaderStageFlags::COMPUTE,
        offset: 0,
        size: crate::dispatch::PUSH_BYTES,
    }];
    let layouts = [set_layout];
    // SAFETY: as above.
    let pipeline_layout = unsafe {
        device.create_pipeline_layout(
            &vk::PipelineLayoutCreateInfo::default().set_layouts(&layouts).push_constant_ranges(&ranges),
            None,
        )
    }
    .vk("vkCreatePipelineLayout")?;
    Ok((set_layout, pipeline_layout))
}
