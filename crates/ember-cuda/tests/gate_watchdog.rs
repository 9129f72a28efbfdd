//! The timing gate's watchdog (`CudaDevice::time_each_ms`, `src/timing.rs`): a call that waits
//! for the stream while its group is held behind the gate would wait for ever; the watchdog opens
//! the gate (after 3 s on a GPU, 10 s on the emulated driver), the calls complete and are
//! reported as not gated, and later timings in the process are not gated. Its own test binary:
//! the watchdog turns the gate off for the whole process.
//!
//! Session 16's H200 hang came from the gate's release storing `u32::MAX`, which the cyclic
//! `CU_STREAM_WAIT_VALUE_GEQ` does not count as reaching 1; the watchdog stored the same value,
//! so with that store back this test waits for ever on a GPU and fails on the emulated driver
//! (which drops work held over 60 s).

use std::time::Instant;

use ember_cuda::CudaDevice;

#[test]
fn a_call_that_waits_for_the_stream_is_released_by_the_watchdog() {
    let device = match CudaDevice::open(0) {
        Ok(device) => device,
        Err(err) if std::env::var("EMBER_REQUIRE_CUDA").as_deref() == Ok("1") => {
            panic!("EMBER_REQUIRE_CUDA=1 but no CUDA device: {err}")
        }
        Err(err) => {
            eprintln!(
                "a_call_that_waits_for_the_stream_is_released_by_the_watchdog: skipped: {err}"
            );
            return;
        }
    };
    let x = device.upload::<f32>(&[1.0, 2.0, 3.0]).unwrap();
    let start = Instant::now();
    // Call 1 copies from the device: a synchronous copy, which waits for the held stream.
    let times = device
        .time_each_ms(3, |i| {
            if i == 1 {
                assert_eq!(device.download(&x)?, [1.0, 2.0, 3.0]);
            }
            Ok(())
        })
        .unwrap();
    println!(
        "{}: released after {:.1} s: {times:?}",
        device.name(),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(times.ms.len(), 3);
    assert!(
        times.ms.iter().all(|t| t.is_finite() && *t >= 0.0),
        "{times:?}"
    );
    assert!(!times.gated, "the watchdog had to open the gate: {times:?}");
    // From now on not gated, and no watchdog to wait for.
    let start = Instant::now();
    let again = device.time_each_ms(2, |_| Ok(())).unwrap();
    assert!(!again.gated, "{again:?}");
    assert!(start.elapsed().as_secs() < 3, "{:?}", start.elapsed());
}
