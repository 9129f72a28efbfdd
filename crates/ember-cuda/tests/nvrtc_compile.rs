//! Every `kernels/*.cu` compiles with NVRTC for sm_80 (Ampere) and sm_90 (Hopper, as `sm_90a`),
//! or for sm_90 only where it is Hopper's (`gemm_sm90.cu`), with no spill to local memory, and
//! holds every entry point the launchers name. NVRTC needs no GPU: CI runs
//! this after `scripts/install-nvrtc.sh`.
//!
//! Without NVRTC the tests say they skipped, unless `EMBER_REQUIRE_NVRTC=1` (set by `.ci/run`),
//! which makes a missing NVRTC a failure: CI cannot pass without having compiled the kernels.

use std::path::Path;

use ember_cuda::kernels::{KernelFile, COMMON_HEADER};
use ember_cuda::{Arch, CudaError, Nvrtc};

/// NVRTC, or `None` after saying why the test is skipped. Panics instead when
/// `EMBER_REQUIRE_NVRTC=1`.
fn nvrtc_or_skip(test: &str) -> Option<&'static Nvrtc> {
    match Nvrtc::get() {
        Ok(nvrtc) => {
            println!(
                "{test}: NVRTC {}.{} from {} ({})",
                nvrtc.version().0,
                nvrtc.version().1,
                nvrtc.path().display(),
                nvrtc.identity()
            );
            Some(nvrtc)
        }
        Err(err) if std::env::var("EMBER_REQUIRE_NVRTC").as_deref() == Ok("1") => {
            panic!("{test}: EMBER_REQUIRE_NVRTC=1 but NVRTC is unavailable: {err}")
        }
        Err(err) => {
            eprintln!("{test}: skipped: {err}");
            None
        }
    }
}

/// One kernel's line of ptxas's report.
#[derive(Debug, Default)]
struct Resources {
    kernel: String,
    registers: u32,
    stack_bytes: u32,
    spill_store_bytes: u32,
    spill_load_bytes: u32,
    smem: String,
}

/// The first integer right before `unit` in `line` ("… 40 bytes stack frame" → 40).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let head = &line[..line.find(unit)?];
    head.split(|c: char| !c.is_ascii_digit())
        .rfind(|s| !s.is_empty())?
        .parse()
        .ok()
}

/// Parses ptxas's `-v` report from NVRTC's log, one entry per kernel.
fn resources(log: &str) -> Vec<Resources> {
    let mut out: Vec<Resources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            out.push(Resources {
                kernel: rest.trim().to_owned(),
                ..Default::default()
            });
        } else if let Some(current) = out.last_mut() {
            if line.contains("stack frame") {
                current.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                current.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
                current.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used ") && line.contains("registers") {
                current.registers = number_before(line, "registers").unwrap_or(0);
                current.smem = line
                    .split(", ")
                    .find(|part| part.contains("smem"))
                    .unwrap_or("0 bytes smem")
                    .trim()
                    .to_owned();
            }
        }
    }
    out
}

#[test]
fn every_kernel_file_compiles_for_sm80_and_sm90() {
    let Some(nvrtc) = nvrtc_or_skip("every_kernel_file_compiles_for_sm80_and_sm90") else {
        return;
    };
    let mut failures = Vec::new();
    println!(
        "{:6} {:14} {:28} {:>5} {:>6} {:>7} smem",
        "arch", "file", "kernel", "regs", "stack", "spills"
    );
    for arch in [Arch::SM80, Arch::SM90] {
        for file in KernelFile::ALL {
            if !file.compiles_for(arch) {
                continue;
            }
            let start = std::time::Instant::now();
            let compiled = match file.compile(nvrtc, arch) {
                Ok(compiled) => compiled,
                Err(err @ CudaError::Compile { .. }) => {
                    failures.push(err.to_string());
                    continue;
                }
                Err(err) => panic!("{} for {arch}: {err}", file.file_name()),
            };
            let seconds = start.elapsed().as_secs_f64();
            assert!(
                !compiled.cubin.is_empty(),
                "{}: empty CUBIN",
                file.file_name()
            );
            // Every kernel a launcher names is in the CUBIN's symbol table.
            for entry in file.entry_points() {
                let symbol = [entry.as_bytes(), b"\0"].concat();
                if !compiled.cubin.windows(symbol.len()).any(|w| w == symbol) {
                    failures.push(format!(
                        "{} for {arch}: no kernel `{entry}` in the CUBIN",
                        file.file_name()
                    ));
                }
            }
            // ptxas serialises wgmma (and says so) when it cannot keep the accumulators in
            // registers across the asynchronous MMAs: a silent loss of most of the speed.
            if compiled
                .log
                .contains("wgmma.mma_async instructions are serialized")
            {
                failures.push(format!(
                    "{} for {arch}: ptxas serialises wgmma:\n{}",
                    file.file_name(),
                    compiled.log
                ));
            }
            let report = resources(&compiled.log);
            assert!(
                !report.is_empty(),
                "{}: no ptxas report in the log:\n{}",
                file.file_name(),
                compiled.log
            );
            for r in &report {
                println!(
                    "{:6} {:14} {:28} {:>5} {:>6} {:>7} {}",
                    arch.to_string(),
                    file.file_name(),
                    r.kernel,
                    r.registers,
                    r.stack_bytes,
                    r.spill_store_bytes + r.spill_load_bytes,
                    r.smem
                );
                if r.spill_store_bytes + r.spill_load_bytes > 0 {
                    failures.push(format!(
                        "{} for {arch}: `{}` spills {} bytes to local memory",
                        file.file_name(),
                        r.kernel,
                        r.spill_store_bytes + r.spill_load_bytes
                    ));
                }
            }
            println!(
                "{:6} {:14} compiled in {seconds:.2} s, CUBIN {} bytes",
                arch.to_string(),
                file.file_name(),
                compiled.cubin.len()
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_kernel_that_does_not_compile_is_an_error_with_the_log() {
    let Some(nvrtc) = nvrtc_or_skip("a_kernel_that_does_not_compile_is_an_error_with_the_log")
    else {
        return;
    };
    let source = "#include \"common.cuh\"\nextern \"C\" __global__ void broken(float* x) { x[0] = undeclared; }\n";
    let err = nvrtc
        .compile("broken.cu", source, &[COMMON_HEADER], Arch::SM80)
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CudaError::Compile { .. }), "{text}");
    assert!(
        text.contains("kernels/broken.cu does not compile for sm_80")
            && text.contains("undeclared"),
        "{text}"
    );
}

/// The on-disk cache (`ember_cuda::kernel_cache`) with a real NVRTC: a miss compiles and stores
/// the very CUBIN a plain compilation gives; a hit is read from disk, not compiled (a planted
/// entry comes back as planted); a damaged entry is compiled again and rewritten.
#[test]
fn the_disk_cache_stores_and_loads_cubins() {
    let Some(nvrtc) = nvrtc_or_skip("the_disk_cache_stores_and_loads_cubins") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ember-nvrtc-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (file, arch) = (KernelFile::Rotary, Arch::SM80); // the smallest file: ~0.05 s
    let compiled = file.compile(nvrtc, arch).unwrap().cubin;
    let first = file.compile_cached(nvrtc, arch, Some(&dir)).unwrap();
    assert_eq!(first, compiled, "a miss gives what compiling gives");
    let entries: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let name = entry.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("rotary-sm_80-") && name.ends_with(".cubin"),
        "{name}"
    );

    // A hit: plant another CUBIN under the same key (stored through the cache's own writer) and
    // get it back.
    let key = file.cache_key(nvrtc, arch);
    assert_eq!(key.file_name(), name);
    let planted = b"not a cubin, but the cache's".to_vec();
    ember_cuda::kernel_cache::store(&dir, &key, &planted).unwrap();
    assert_eq!(
        file.compile_cached(nvrtc, arch, Some(&dir)).unwrap(),
        planted
    );

    // Damaged: compiled again, and the entry rewritten whole.
    let mut bytes = std::fs::read(entry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(entry, &bytes).unwrap();
    assert_eq!(
        file.compile_cached(nvrtc, arch, Some(&dir)).unwrap(),
        compiled
    );
    assert_eq!(
        ember_cuda::kernel_cache::load(&dir, &key).as_deref(),
        Some(compiled.as_slice())
    );
    // Without a directory: compiled, nothing written.
    assert_eq!(file.compile_cached(nvrtc, arch, None).unwrap(), compiled);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs without NVRTC: a new `.cu` file must be listed in `KernelFile` (or it would be neither
/// embedded nor compiled by CI), and the embedded text is the file's. The folder is the crate's
/// `kernels/`, else `./kernels` (a test binary carried to another machine runs from the crate).
#[test]
fn every_cu_file_is_embedded() {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let dir = if built_from.is_dir() {
        built_from
    } else {
        Path::new("kernels").to_owned()
    };
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = KernelFile::ALL
        .iter()
        .map(|f| f.file_name().to_owned())
        .collect();
    embedded.sort();
    assert_eq!(on_disk, embedded);
    for file in KernelFile::ALL {
        let text = std::fs::read_to_string(dir.join(file.file_name())).unwrap();
        assert_eq!(text, file.source(), "{}", file.file_name());
    }
    let header = std::fs::read_to_string(dir.join(COMMON_HEADER.0)).unwrap();
    assert_eq!(header, COMMON_HEADER.1);
}

#[test]
fn ptxas_report_is_parsed() {
    let log = "ptxas info    : Compiling entry function 'k' for 'sm_80'\n\
               ptxas info    : Function properties for k\n\
               ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
               ptxas info    : Used 95 registers, used 1 barriers, 41088 bytes smem, 408 bytes cmem[0]\n";
    let r = &resources(log)[0];
    assert_eq!(
        (
            r.kernel.as_str(),
            r.registers,
            r.stack_bytes,
            r.spill_store_bytes,
            r.spill_load_bytes
        ),
        ("k", 95, 8, 4, 12)
    );
    assert_eq!(r.smem, "41088 bytes smem");
}
