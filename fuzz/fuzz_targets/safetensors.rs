//! Bytes → `SafeTensorsFile::from_bytes` (the same validation as `open`, without a file): it
//! must return `Ok` or `Err`, never panic; every tensor of an accepted file must read as
//! exactly `∏ shape` values, and every unsupported one's raw bytes must be there.

#![no_main]

use ember_tensor::SafeTensorsFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = SafeTensorsFile::from_bytes("fuzz.safetensors", data.to_vec()) else {
        return;
    };
    for (name, info) in file.iter() {
        let tensor = file
            .f32_tensor_with_shape(name, &info.shape)
            .expect("a validated tensor reads");
        assert_eq!(tensor.data().len(), info.num_elements(), "{name}");
        assert!(info.byte_range.end <= data.len());
    }
    for (name, _) in file.unsupported_tensors() {
        assert!(file.raw_bytes(name).is_ok(), "{name}");
        assert!(file.f32_tensor(name).is_err(), "{name}");
    }
});
