//! A driver with no GPU visible to the process (none in the machine, `CUDA_VISIBLE_DEVICES=""`,
//! a container without devices) makes `CudaDevice::open` say so: `NoDevice`, not a bare driver
//! error from `cuInit`. Its own test binary: it sets the process's environment before the
//! driver is first called.

use ember_cuda::{CudaDevice, CudaError};

#[test]
fn no_visible_gpu_is_no_device() {
    // Before the driver's first cuInit in this process, which reads it.
    std::env::set_var("CUDA_VISIBLE_DEVICES", "");
    match CudaDevice::open(0) {
        Err(CudaError::NoDevice {
            ordinal: 0,
            count: 0,
        }) => {}
        Err(CudaError::NoDriver) if std::env::var("EMBER_REQUIRE_CUDA").as_deref() != Ok("1") => {
            eprintln!("no_visible_gpu_is_no_device: skipped: no CUDA driver");
        }
        Err(other) => panic!("expected NoDevice {{ ordinal: 0, count: 0 }}, got: {other}"),
        Ok(device) => panic!("opened {} with no device visible", device.name()),
    }
}
