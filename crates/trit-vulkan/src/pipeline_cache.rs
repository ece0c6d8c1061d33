//! The compiled pipelines kept on disk between processes (a `VkPipelineCache`).
//!
//! Pipelines are built on first use (`pipelines.rs`), and building one means the driver
//! compiles its SPIR-V: on an H100 with an empty driver cache a model's first run spends ~5 s
//! there. Some drivers keep their own disk cache (NVIDIA's is per executable, so a new build
//! or another program linking libtrit starts cold); many mobile drivers keep none and expect
//! the application to. So the device creates its pipelines through a `VkPipelineCache`
//! filled from `vk-pipelines-VENDOR-DEVICE-UUID.bin` (UUID: the driver's pipeline-cache UUID,
//! which changes with the driver) in `$TRIT_VULKAN_PIPELINE_CACHE`, else
//! `$XDG_CACHE_HOME/trit`, else `~/.cache/trit`, and writes the cache back (to a temporary
//! file, then renamed over the old one) whenever new pipelines were built.
//! `TRIT_VULKAN_PIPELINE_CACHE=0` turns it off.
//!
//! A file is handed to the driver only if its header is the one this device writes (header
//! version one, this vendor, device and cache UUID); a driver must also ignore data it cannot
//! use, but a damaged file is not worth trusting it with. Nothing here is fatal: a cache that
//! cannot be read, created or written leaves pipelines built as without one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ash::vk;

/// A device's pipeline cache and the file behind it.
pub(crate) struct DiskCache {
    handle: vk::PipelineCache,
    path: Option<PathBuf>,
    /// Bytes of the file given to the driver when the cache was created (0: none).
    loaded: u64,
    /// Bytes written by the last save (0: none yet).
    saved: AtomicU64,
    /// Serialises saves of this process.
    saving: Mutex<()>,
}

impl DiskCache {
    /// The cache of `device` (`props`: its physical device's properties), filled from its
    /// file where there is one that fits.
    pub fn open(device: &ash::Device, props: &vk::PhysicalDeviceProperties) -> DiskCache {
        let path = cache_path(props);
        let data = path.as_deref().and_then(|p| match std::fs::read(p) {
            Ok(d) if header_matches(&d, props) => Some(d),
            Ok(d) => {
                tracing::info!(path = %p.display(), bytes = d.len(), "trit-vulkan: pipeline cache file not for this device and driver; ignored");
                None
            }
            Err(_) => None,
        });
        let with = |bytes: &[u8]| {
            let ci = vk::PipelineCacheCreateInfo::default().initial_data(bytes);
            // SAFETY: valid create info; `bytes` outlives the call.
            unsafe { device.create_pipeline_cache(&ci, None) }
        };
        let (handle, loaded) = match data.as_deref().map(with) {
            Some(Ok(h)) => (h, data.as_ref().map_or(0, |d| d.len() as u64)),
            other => {
                if let Some(Err(e)) = other {
                    tracing::info!(error = ?e, "trit-vulkan: pipeline cache file refused by the driver; starting empty");
                }
                match with(&[]) {
                    Ok(h) => (h, 0),
                    Err(e) => {
                        tracing::warn!(error = ?e, "trit-vulkan: no pipeline cache");
                        (vk::PipelineCache::null(), 0)
                    }
                }
            }
        };
        if loaded > 0 {
            tracing::debug!(bytes = loaded, "trit-vulkan: pipeline cache loaded");
        }
        let path = path.filter(|_| handle != vk::PipelineCache::null());
        DiskCache { handle, path, loaded, saved: AtomicU64::new(0), saving: Mutex::new(()) }
    }

    /// The cache to create pipelines through (null: none).
    pub fn handle(&self) -> vk::PipelineCache {
        self.handle
    }

    /// The file, if the cache is kept on disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Bytes read from the file at creation, and written by the last save.
    pub fn stats(&self) -> (u64, u64) {
        (self.loaded, self.saved.load(Ordering::Relaxed))
    }

    /// Write the cache to its file (the caller knows new pipelines were built).
    pub fn save(&self, device: &ash::Device) {
        let Some(path) = &self.path else { return };
        let _one = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: a live cache of this device; the driver synchronises reads of it against
        // pipeline creation (caches are externally synchronised only for merges).
        let data = match unsafe { device.get_pipeline_cache_data(self.handle) } {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = ?e, "trit-vulkan: pipeline cache not read back");
                return;
            }
        };
        match write_replacing(path, &data) {
            Ok(()) => {
                self.saved.store(data.len() as u64, Ordering::Relaxed);
                tracing::debug!(path = %path.display(), bytes = data.len(), "trit-vulkan: pipeline cache saved");
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "trit-vulkan: pipeline cache not saved"),
        }
    }

    /// Destroy the cache (the device is idle; after the last save).
    pub fn destroy(&mut self, device: &ash::Device) {
        if self.handle != vk::PipelineCache::null() {
            // SAFETY: no pipeline is being created; the cache is not used again.
            unsafe { device.destroy_pipeline_cache(self.handle, None) };
            self.handle = vk::PipelineCache::null();
        }
    }
}

/// The cache file of a device, or None when caching on disk is off or there is no place for it.
fn cache_path(props: &vk::PhysicalDeviceProperties) -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let dir = match var("TRIT_VULKAN_PIPELINE_CACHE") {
        Some(v) if v == "0" => return None,
        Some(v) => PathBuf::from(v),
        None => var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))?
            .join("trit"),
    };
    let uuid: String = props.pipeline_cache_uuid.iter().map(|b| format!("{b:02x}")).collect();
    Some(dir.join(format!("vk-pipelines-{:04x}-{:04x}-{uuid}.bin", props.vendor_id, props.device_id)))
}

/// Whether `data` begins with the header `vkGetPipelineCacheData` writes on this device:
/// header length 32, `VK_PIPELINE_CACHE_HEADER_VERSION_ONE`, vendor and device ID (each
/// least significant byte first), then the pipeline-cache UUID.
pub(crate) fn header_matches(data: &[u8], props: &vk::PhysicalDeviceProperties) -> bool {
    let word = |i: usize| data.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    data.len() >= 32
        && word(0) == Some(32)
        && word(4) == Some(vk::PipelineCacheHeaderVersion::ONE.as_raw() as u32)
        && word(8) == Some(props.vendor_id)
        && word(12) == Some(props.device_id)
        && data[16..32] == props.pipeline_cache_uuid
}

/// Write `data` to a temporary file next to `path`, then rename it over `path`, so a reader
/// (another process) sees the old file or the new one, never a part.
fn write_replacing(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
