use thiserror::Error;

/// Why the Vulkan backend is unavailable or an operation on it failed.
#[derive(Debug, Error)]
pub enum Error {
    #[error("no Vulkan device: the Vulkan loader (libvulkan) could not be opened: {0}")]
    NoLoader(String),
    #[error("no Vulkan device: {0}")]
    NoDevice(String),
    /// A setup failure reported earlier (the message is complete).
    #[error("{0}")]
    Unavailable(String),
    #[error("Vulkan call {call} failed: {result}")]
    Vk { call: &'static str, result: ash::vk::Result },
    #[error("Vulkan allocation of {size} bytes failed: {reason}")]
    Alloc { size: u64, reason: String },
    #[error("kernel {0} is missing from the build")]
    MissingKernel(String),
    #[error("graph node {node} ({op}) cannot run on the Vulkan backend: {why}")]
    Unsupported { node: String, op: String, why: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attach the name of the failing Vulkan call to a `vk::Result`.
pub(crate) trait VkContext<T> {
    fn vk(self, call: &'static str) -> Result<T>;
}

impl<T> VkContext<T> for std::result::Result<T, ash::vk::Result> {
    fn vk(self, call: &'static str) -> Result<T> {
        self.map_err(|result| Error::Vk { call, result })
    }
}
