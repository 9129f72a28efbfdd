//! Ember's GEMM on BERT-base shapes, in TFLOP/s: `Y = X·Wᵀ` (`X` `[T, k]`, `W` `[n, k]`) for
//! T ∈ {2400, 4800} × (n × k) ∈ {768 × 768, 3072 × 768, 768 × 3072} (attention output, FFN up,
//! FFN down; in `nn.Linear` terms out × in), each GEMM kernel that handles the dtype, plus the
//! fused FFN-up epilogue (`+ b`, GELU).
//!
//! Protocol (the same as `scripts/gpu/torch_gemm.py`, so that the ratio is fair): random inputs
//! in [-1, 1) (never zeros), 4 input sets used in turn, 10 warm-up launches, then 100 launches
//! queued back to back behind a gate (`CudaDevice::time_each_ms`: the stream waits while the
//! host queues them all, with a CUDA event between each two), the median of their GPU times:
//! no host time inside a launch's time. FLOPs = 2·T·n·k. A case whose gate the driver refused
//! or the watchdog opened says `(not gated)` (`"gated": false` in the JSON).
//!
//! With `--cublas LIB` (a `libcublas.so`; bench_gpu.sh passes the one PyTorch loads), each
//! kernel's plain product is also timed against cuBLAS in this process: 200 calls in one gated
//! sequence, Ember's and `cublasGemmEx`'s in turn on the same shapes (each call on other inputs
//! than the call before), so that the ratio holds for the same GPU state; `cublas_ms` in the JSON
//! (the fused `+ b + GELU` case has no cuBLAS counterpart here, only PyTorch's).
//!
//! ```sh
//! cargo run --release -p ember-cuda --example gemm_bench -- [--dtype bf16|f16] [--json FILE]
//!     [--kernels Mma,Simt] [--cublas LIB] [--quick]
//! ```
//! `--quick`: small shapes and a few calls, the same steps (a dry run on the emulated driver).
//! `--profile`: each kernel (and cuBLAS) once after one warm-up call, untimed and ungated, for
//! Nsight Compute (`ncu … gemm_bench --profile --only 4800x3072x768`; bench_gpu.sh's
//! `EMBER_GPU_NCU=1`); `--only TxNxK` keeps one shape.
//! Prints one line per case; `--json` also appends them to FILE as JSON lines for
//! `scripts/gpu/bench_gpu.sh`. `--kernels` times only the kernels whose names start with one of
//! the prefixes and with none of those written `-prefix` (`--kernels Wgmma,-WgmmaPingpong`;
//! bench_gpu.sh times the `mma.sync`, the proven `wgmma` and the new kernels in separate runs,
//! so that a hang in one cannot lose the others' figures). Without a GPU it says so and exits
//! with status 2.

mod cublas;

use std::io::Write;

use cublas::Cublas;

use ember_cpu::Activation;
use ember_cuda::gemm::{linear_with_kernel, DeviceLinear, GemmKernel};
use ember_cuda::{CudaDevice, CudaError, DeviceTensor, Dtype, Element};

const SETS: usize = 4;
const WARM_UP: usize = 10;
const ITERATIONS: usize = 100;

/// How much is run: the BERT shapes and the protocol above, or with `--quick` the same steps on
/// small shapes, 4 calls after 2 (for scripts/emulated-cuda.sh's dry run on the emulated driver:
/// every path of the benchmark and its JSON, no figure worth reading).
#[derive(Clone, Copy)]
struct Plan {
    ts: [usize; 2],
    shapes: [(usize, usize, &'static str); 3],
    warm_up: usize,
    iterations: usize,
    /// `--profile`: each call once after one warm-up call, not timed (no gate: a profiler
    /// replaying each launch would block the host behind it), for Nsight Compute.
    profile: bool,
}

const FULL: Plan = Plan {
    ts: [2400, 4800],
    shapes: [
        (768, 768, "attn_out"),
        (3072, 768, "ffn_up"),
        (768, 3072, "ffn_down"),
    ],
    warm_up: WARM_UP,
    iterations: ITERATIONS,
    profile: false,
};

const PROFILE: Plan = Plan {
    warm_up: 1,
    iterations: 1,
    profile: true,
    ..FULL
};

const QUICK: Plan = Plan {
    ts: [96, 200],
    shapes: [
        (64, 64, "attn_out"),
        (256, 64, "ffn_up"),
        (64, 256, "ffn_down"),
    ],
    warm_up: 2,
    iterations: 4,
    profile: false,
};

struct Args {
    dtype: Dtype,
    json: Option<std::path::PathBuf>,
    /// `--kernels Mma,Simt`: only the kernels whose names start with one of these (if any is
    /// given) and with none of those written `-prefix`.
    kernels: Vec<String>,
    /// `--cublas LIB`: time cuBLAS in this process too.
    cublas: Option<std::path::PathBuf>,
    /// `--quick`: [`QUICK`] instead of [`FULL`]; `--profile`: [`PROFILE`].
    quick: bool,
    profile: bool,
    /// `--only TxNxK`: that one shape (`4800x3072x768`).
    only: Option<(usize, usize, usize)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dtype: Dtype::Bf16,
        json: None,
        kernels: Vec::new(),
        cublas: None,
        quick: false,
        profile: false,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dtype" => {
                args.dtype = match it.next().as_deref() {
                    Some("bf16") => Dtype::Bf16,
                    Some("f16") => Dtype::F16,
                    Some("f32") => Dtype::F32,
                    other => return Err(format!("--dtype bf16|f16|f32, not {other:?}")),
                }
            }
            "--json" => args.json = Some(it.next().ok_or("--json FILE")?.into()),
            "--cublas" => args.cublas = Some(it.next().ok_or("--cublas LIB")?.into()),
            "--quick" => args.quick = true,
            "--profile" => args.profile = true,
            "--only" => {
                let shape = it.next().ok_or("--only TxNxK")?;
                let dims: Result<Vec<usize>, _> = shape.split('x').map(str::parse).collect();
                match dims.as_deref() {
                    Ok(&[t, n, k]) => args.only = Some((t, n, k)),
                    _ => return Err(format!("--only TxNxK (4800x3072x768), not {shape:?}")),
                }
            }
            "--kernels" => {
                args.kernels = it
                    .next()
                    .ok_or("--kernels NAME,… (prefixes of GemmKernel names)")?
                    .split(',')
                    .filter(|part| !part.is_empty() && *part != "-")
                    .map(str::to_owned)
                    .collect()
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// splitmix64 in [-1, 1).
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Measured {
    median_ms: f64,
    tflops: f64,
    /// Whether the calls ran behind `time_each_ms`'s gate (no host time inside a call's time).
    gated: bool,
    /// cuBLAS's median in the same sequence (`--cublas`, plain product only).
    cublas_ms: Option<f64>,
}

/// The median of `times` (`timing::median`; the sequences are never empty).
fn median(times: &[f32]) -> f64 {
    f64::from(ember_cuda::timing::median(times).unwrap_or(f32::NAN))
}

/// One kernel on one case: `plan.iterations` gated calls; with `cublas` (weights `raw`, the same
/// values as `ws`) twice as many, Ember's (even) and cuBLAS's (odd) in turn (the input sets:
/// `run` below).
#[allow(clippy::too_many_arguments)]
fn measure<E: Element>(
    plan: Plan,
    device: &CudaDevice,
    kernel: GemmKernel,
    xs: &[DeviceTensor<E>],
    ws: &[DeviceLinear<E>],
    t: usize,
    act: Activation,
    ys: &mut [DeviceTensor<E>],
    cublas: Option<(&Cublas, &[DeviceTensor<E>])>,
) -> Result<Measured, CudaError> {
    let (n, k) = (ws[0].n(), ws[0].k());
    let flops = 2.0 * (t * n * k) as f64;
    let paired = cublas.is_some();
    // Alone: Ember on set c % SETS. Paired: Ember on the even calls (set (c/2) % SETS), cuBLAS
    // on the odd ones two sets further on, so that no call reads the inputs of the call just
    // before it (which L2 would still hold) and each side goes through every set.
    let mut run = |c: usize| {
        let (s, theirs) = if paired {
            ((c / 2 + 2 * (c % 2)) % SETS, c % 2 == 1)
        } else {
            (c % SETS, false)
        };
        match cublas {
            Some((cublas, raw)) if theirs => {
                cublas.gemm(device, &xs[s], t, &raw[s], n, k, &mut ys[s])
            }
            _ => linear_with_kernel(device, kernel, &xs[s], t, &ws[s], act, None, &mut ys[s]),
        }
    };
    let calls = if paired { 2 } else { 1 } * plan.iterations;
    for c in 0..calls / plan.iterations * plan.warm_up {
        run(c)?;
    }
    device.synchronize()?;
    if plan.profile {
        for c in 0..calls {
            run(c)?;
        }
        device.synchronize()?;
        return Ok(Measured {
            median_ms: f64::NAN,
            tflops: f64::NAN,
            gated: false,
            cublas_ms: None,
        });
    }
    let times = device.time_each_ms(calls, run)?;
    let gated = times.gated;
    let (ember, cublas_ms) = if paired {
        let every_other = |first: usize| {
            times
                .ms
                .iter()
                .skip(first)
                .step_by(2)
                .copied()
                .collect::<Vec<f32>>()
        };
        (median(&every_other(0)), Some(median(&every_other(1))))
    } else {
        (median(&times.ms), None)
    };
    Ok(Measured {
        median_ms: ember,
        tflops: flops / (ember * 1e-3) / 1e12,
        gated,
        cublas_ms,
    })
}

#[allow(clippy::too_many_arguments)]
fn bench<E: Element>(
    plan: Plan,
    only: Option<(usize, usize, usize)>,
    device: &CudaDevice,
    prefixes: &[String],
    json: &mut Option<std::fs::File>,
    cublas: Option<&Cublas>,
) -> Result<(), CudaError> {
    let mut cublas = cublas.filter(|_| E::DTYPE != Dtype::F32);
    let (exclude, include): (Vec<&String>, Vec<&String>) =
        prefixes.iter().partition(|p| p.starts_with('-'));
    let kernels: Vec<GemmKernel> = GemmKernel::ALL
        .into_iter()
        .filter(|kernel| kernel.entry_point(E::DTYPE).is_some() && kernel.runs_on(device.arch()))
        .filter(|kernel| {
            let name = format!("{kernel:?}");
            (include.is_empty() || include.iter().any(|p| name.starts_with(p.as_str())))
                && !exclude.iter().any(|p| name.starts_with(&p[1..]))
        })
        .collect();
    println!(
        "{} ({}, {} SMs), {}, median of {} gated calls after {} warm-up, {SETS} input sets",
        device.name(),
        device.arch(),
        device.multiprocessors(),
        E::DTYPE,
        plan.iterations,
        plan.warm_up
    );
    if let Some((t, n, k)) = only {
        if !(plan.ts.contains(&t) && plan.shapes.iter().any(|s| (s.0, s.1) == (n, k))) {
            return Err(CudaError::InvalidShape {
                op: "gemm_bench --only",
                reason: format!("{t}x{n}x{k} is not one of this plan's shapes"),
            });
        }
    }
    for t in plan.ts {
        for (n, k, name) in plan.shapes {
            if only.is_some_and(|shape| shape != (t, n, k)) {
                continue;
            }
            let xs = (0..SETS)
                .map(|s| device.upload::<E>(&random(t * k, s as u64)))
                .collect::<Result<Vec<_>, _>>()?;
            let scale = 1.0 / (k as f32).sqrt();
            let w_values: Vec<Vec<f32>> = (0..SETS)
                .map(|s| {
                    random(n * k, 100 + s as u64)
                        .iter()
                        .map(|v| v * scale)
                        .collect()
                })
                .collect();
            let weights = |bias: bool| {
                (0..SETS)
                    .map(|s| {
                        let b = bias.then(|| random(n, 200 + s as u64));
                        DeviceLinear::<E>::upload(device, &w_values[s], b.as_deref(), n, k)
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let plain = weights(false)?;
            // cuBLAS's W: the same values, as a plain [n, k] tensor.
            let raw = match cublas {
                Some(_) => w_values
                    .iter()
                    .map(|w| device.upload::<E>(w))
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            // FFN up also as BERT runs it: + b and GELU fused into the epilogue (torch: a
            // separate GELU kernel after cuBLAS's bias epilogue).
            let fused = if name == "ffn_up" {
                Some(weights(true)?)
            } else {
                None
            };
            let mut ys = (0..SETS)
                .map(|_| device.zeros::<E>(t * n))
                .collect::<Result<Vec<_>, _>>()?;
            let variants = [
                Some(("", Activation::Identity, &plain)),
                fused.as_ref().map(|ws| ("+b+gelu", Activation::Gelu, ws)),
            ];
            // cuBLAS must compute what Ember does (a wrong transpose or stream would time
            // something else): once per shape, against the first kernel timed. If not, it is
            // left out from here on, and Ember's kernels are still timed.
            if let (Some(lib), Some(&first)) = (cublas, kernels.first()) {
                let theirs = lib
                    .gemm(device, &xs[0], t, &raw[0], n, k, &mut ys[0])
                    .and_then(|()| device.download(&ys[0]))
                    .unwrap_or_else(|err| {
                        eprintln!("gemm_bench: cuBLAS failed on {t} × {n} × {k}: {err}");
                        Vec::new()
                    });
                linear_with_kernel(
                    device,
                    first,
                    &xs[0],
                    t,
                    &plain[0],
                    Activation::Identity,
                    None,
                    &mut ys[1],
                )?;
                let ours = device.download(&ys[1])?;
                let (err, norm) = theirs
                    .iter()
                    .zip(&ours)
                    .fold((0.0f64, 0.0f64), |(e, m), (&a, &b)| {
                        (e + f64::from(a - b).powi(2), m + f64::from(b).powi(2))
                    });
                let nmse = if theirs.len() == ours.len() {
                    err / norm
                } else {
                    f64::NAN
                };
                if nmse.is_nan() || nmse > 1e-4 {
                    eprintln!(
                        "gemm_bench: cuBLAS and {first:?} disagree on {t} × {n} × {k} \
                         (NMSE {nmse:.2e}): cuBLAS left out from here on"
                    );
                    cublas = None;
                }
            }
            for &kernel in &kernels {
                for &(epilogue, act, ws) in variants.iter().flatten() {
                    // What gemm::linear runs for this product (the activation decides on FFN up).
                    let chosen = GemmKernel::choose(
                        E::DTYPE,
                        t,
                        n,
                        device.multiprocessors(),
                        device.gemm_family(),
                        act,
                    );
                    let paired = cublas
                        .filter(|_| epilogue.is_empty())
                        .map(|c| (c, &raw[..]));
                    let m = match paired {
                        None => measure(plan, device, kernel, &xs, ws, t, act, &mut ys, None)?,
                        // cuBLAS is a comparison only: if the paired run fails, time the
                        // kernel alone, and leave cuBLAS out from here on.
                        Some(_) => {
                            match measure(plan, device, kernel, &xs, ws, t, act, &mut ys, paired) {
                                Ok(m) => m,
                                Err(err) => {
                                    eprintln!(
                                    "gemm_bench: {kernel:?} paired with cuBLAS failed ({err}): \
                                     timing it alone, and cuBLAS left out from here on"
                                );
                                    cublas = None;
                                    measure(plan, device, kernel, &xs, ws, t, act, &mut ys, None)?
                                }
                            }
                        }
                    };
                    let case = format!("gemm/T={t}/{name}_{n}x{k}{epilogue}/{}", E::DTYPE);
                    if plan.profile {
                        println!(
                            "{case:44} {kernel:?}: profiled (ran once after one warm-up call)"
                        );
                        continue;
                    }
                    let beside = m.cublas_ms.map_or(String::new(), |c| {
                        format!(
                            "  | cuBLAS here {:7.1} TFLOP/s, Ember ÷ cuBLAS {:.2}",
                            2.0 * (t * n * k) as f64 / (c * 1e-3) / 1e12,
                            c / m.median_ms
                        )
                    });
                    println!(
                        "{case:44} {:>10}{} {:9.1} µs {:7.1} TFLOP/s{}{beside}",
                        format!("{kernel:?}"),
                        if kernel == chosen { "*" } else { " " },
                        m.median_ms * 1e3,
                        m.tflops,
                        if m.gated { "" } else { "  (not gated)" }
                    );
                    if let Some(file) = json {
                        let line = format!(
                            "{{\"impl\":\"ember\",\"kernel\":\"{kernel:?}\",\"chosen\":{},\"t\":{t},\"n\":{n},\"k\":{k},\"epilogue\":\"{epilogue}\",\"dtype\":\"{}\",\"median_ms\":{},\"tflops\":{},\"gated\":{}{}}}",
                            kernel == chosen,
                            E::DTYPE,
                            m.median_ms,
                            m.tflops,
                            m.gated,
                            m.cublas_ms
                                .map_or(String::new(), |c| format!(",\"cublas_ms\":{c}"))
                        );
                        writeln!(file, "{line}").map_err(|e| CudaError::InvalidShape {
                            op: "gemm_bench",
                            reason: format!("cannot write --json: {e}"),
                        })?;
                    }
                }
            }
        }
    }
    println!("(* = the kernel gemm::linear chooses for the shape)");
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("gemm_bench: {message}");
            std::process::exit(1);
        }
    };
    let device = match CudaDevice::open(0) {
        Ok(device) => device,
        Err(err) => {
            eprintln!("gemm_bench: no GPU: {err}");
            std::process::exit(2);
        }
    };
    let append = |path: &std::path::PathBuf| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    };
    let mut json = match args.json.as_ref().map(append).transpose() {
        Ok(file) => file,
        Err(err) => {
            eprintln!("gemm_bench: cannot create the --json file: {err}");
            std::process::exit(1);
        }
    };
    // cuBLAS is a comparison only: without it the kernels are still timed (and PyTorch's
    // torch_gemm.py still gives the table's cuBLAS column).
    let cublas = args
        .cublas
        .as_deref()
        .and_then(|path| match Cublas::load(path, &device) {
            Ok(cublas) => {
                println!(
                    "cuBLAS {} ({}) in this process",
                    cublas.version,
                    cublas.path.display()
                );
                Some(cublas)
            }
            Err(err) => {
                eprintln!("gemm_bench: --cublas: {err}; timing Ember's kernels alone");
                None
            }
        });
    // No warm_up(): it would load every kernel file, and a file that fails to load would stop
    // the kernels of the others from being timed. Each kernel's first launch (and its file's
    // NVRTC compilation) falls in its own warm-up launches instead.
    let plan = match (args.quick, args.profile) {
        (_, true) => PROFILE,
        (true, false) => QUICK,
        (false, false) => FULL,
    };
    let result = match args.dtype {
        Dtype::Bf16 => bench::<half::bf16>(
            plan,
            args.only,
            &device,
            &args.kernels,
            &mut json,
            cublas.as_ref(),
        ),
        Dtype::F16 => bench::<half::f16>(
            plan,
            args.only,
            &device,
            &args.kernels,
            &mut json,
            cublas.as_ref(),
        ),
        Dtype::F32 => bench::<f32>(
            plan,
            args.only,
            &device,
            &args.kernels,
            &mut json,
            cublas.as_ref(),
        ),
    };
    if let Err(err) = result {
        eprintln!("gemm_bench: {err}");
        std::process::exit(1);
    }
}
