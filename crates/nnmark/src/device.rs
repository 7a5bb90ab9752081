//! Run-time choice of compute device. The default build has burn's pure-Rust `flex` CPU
//! backend; the `tch` feature adds LibTorch (CPU and CUDA).

use burn::prelude::Device;

use crate::error::{Error, Result};

/// Names accepted by [`parse_device`].
pub const DEVICE_NAMES: &str =
    "cpu (flex), tch-cpu, cuda[:N] (the last two need the `tch` feature)";

/// Parses `cpu`/`flex`, `tch-cpu`, `cuda` or `cuda:N`.
// burn marks its LibTorch backend deprecated; it is still the only CUDA path that builds here.
#[allow(deprecated)]
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "tch")]
        "tch-cpu" => Ok(Device::libtorch()),
        #[cfg(feature = "tch")]
        n if n == "cuda" || n.starts_with("cuda:") => {
            let index = n.strip_prefix("cuda:").unwrap_or("0");
            let index: usize = index
                .parse()
                .map_err(|_| Error::invalid("device", name, "expected cuda or cuda:N"))?;
            Ok(Device::libtorch_cuda(index))
        }
        #[cfg(not(feature = "tch"))]
        n if n == "tch-cpu" || n == "cuda" || n.starts_with("cuda:") => {
            Err(Error::Unsupported(format!(
                "device '{name}' needs nnmark built with the `tch` feature (see tools/setup-libtorch.sh)"
            )))
        }
        _ => Err(Error::invalid(
            "device",
            name,
            format!("known devices: {DEVICE_NAMES}"),
        )),
    }
}

/// The human-readable name of the backend a device runs on.
pub fn describe(device: &Device) -> String {
    format!("{device:?}")
}
