//! The CUDA kernels on the CPU: `emu/` emulates the CUDA execution model (threads as fibers,
//! barriers, warp collectives, `cp.async`, `ldmatrix`, `mma`, shared memory poisoned with NaN),
//! and this test compiles it with every `kernels/*.cu` it has cases for, unchanged, with the host
//! C++ compiler under AddressSanitizer and UBSan, then runs every case against a
//! double-precision reference under several thread schedules (`emu/run_kernels.cpp`). Indexing
//! and synchronisation bugs in the kernels fail here, without a GPU.
//!
//! The compiler is `$CXX`, else `c++`, else `g++`. Without one the test says it skipped, unless
//! `EMBER_REQUIRE_EMULATION=1`, which makes that a failure. `EMBER_EMULATION_CASES=gemm,pool`
//! runs only the cases whose name contains one of the strings.
//!
//! ```sh
//! cargo test --release -p ember-cuda --test emulation -- --nocapture
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;

use ember_cuda::kernels::KernelFile;

const SANITIZERS: &str = "-fsanitize=address,undefined";

/// The host compiler, or `None` after saying why the test is skipped (a panic under
/// `EMBER_REQUIRE_EMULATION=1`).
fn compiler_or_skip() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("CXX") {
        Ok(cxx) if !cxx.is_empty() => vec![cxx],
        _ => vec!["c++".to_owned(), "g++".to_owned()],
    };
    for cxx in &candidates {
        if Command::new(cxx)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(cxx.clone());
        }
    }
    let why = format!("no C++ compiler (tried {})", candidates.join(", "));
    if std::env::var("EMBER_REQUIRE_EMULATION").as_deref() == Ok("1") {
        panic!("EMBER_REQUIRE_EMULATION=1 but {why}");
    }
    eprintln!("kernels_match_the_reference_under_emulation: skipped: {why}");
    None
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"))
}

/// Whether `cxx` builds and runs a program with the sanitizers.
fn has_sanitizers(cxx: &str, dir: &Path) -> bool {
    let source = dir.join("probe.cpp");
    let binary = dir.join("probe");
    std::fs::write(&source, "int main() { return 0; }\n").expect("write the probe");
    let built = run(Command::new(cxx)
        .arg(SANITIZERS)
        .arg(&source)
        .arg("-o")
        .arg(&binary))
    .status
    .success();
    built && run(&mut Command::new(&binary)).status.success()
}

/// The `emu/*.cpp` files: the emulator, the driver and one `<op>_cases.cpp` per kernel file.
fn sources(emu: &Path) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(emu)
        .expect("read emu/")
        .map(|entry| entry.expect("read emu/").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cpp"))
        .collect();
    sources.sort();
    sources
}

#[test]
fn kernels_match_the_reference_under_emulation() {
    let Some(cxx) = compiler_or_skip() else {
        return;
    };
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (kernels, emu) = (crate_dir.join("kernels"), crate_dir.join("emu"));
    let build = Path::new(env!("CARGO_TARGET_TMPDIR")).join("emulation");
    std::fs::create_dir_all(&build).expect("create the build directory");

    let sanitizers = has_sanitizers(&cxx, &build);
    if !sanitizers {
        println!("{cxx} cannot build with {SANITIZERS}: building without sanitizers");
    }
    let sources = sources(&emu);
    let emulated: Vec<String> = sources
        .iter()
        .filter_map(|s| s.file_stem()?.to_str()?.strip_suffix("_cases"))
        .map(|op| format!("{op}.cu"))
        .collect();
    for file in KernelFile::ALL {
        if !emulated.iter().any(|e| e == file.file_name()) {
            println!("not emulated (no emu/*_cases.cpp): {}", file.file_name());
        }
    }

    // One object per source, compiled in parallel (the kernel files are the slow ones).
    let flags = |command: &mut Command| {
        command
            .args(["-std=c++17", "-O1", "-g", "-fno-strict-aliasing"])
            .args(["-DEMBER_CPU_EMULATION", "-Wall", "-Wextra"])
            // `#pragma unroll` is CUDA's; the host compiler ignores it.
            .arg("-Wno-unknown-pragmas")
            // g++'s note that passing a 64-byte aligned struct (a CUtensorMap) by value changed ABI
            // in GCC 4.6: irrelevant, everything is compiled together.
            .arg("-Wno-psabi")
            .arg("-I")
            .arg(&kernels)
            .arg("-I")
            .arg(&emu);
        if sanitizers {
            command.args([SANITIZERS, "-fno-sanitize-recover=all"]);
        }
    };
    let objects: Vec<PathBuf> = thread::scope(|scope| {
        let jobs: Vec<_> = sources
            .iter()
            .map(|source| {
                let object = build.join(source.file_name().unwrap()).with_extension("o");
                let mut command = Command::new(&cxx);
                flags(&mut command);
                command.arg("-c").arg(source).arg("-o").arg(&object);
                scope.spawn(move || (run(&mut command), object))
            })
            .collect();
        jobs.into_iter()
            .map(|job| {
                let (output, object) = job.join().expect("compile thread");
                eprint!("{}", String::from_utf8_lossy(&output.stderr)); // warnings
                assert!(
                    output.status.success(),
                    "compiling {} failed:\n{}",
                    object.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
                object
            })
            .collect()
    });
    let binary = build.join("run_kernels");
    let mut link = Command::new(&cxx);
    if sanitizers {
        link.arg(SANITIZERS);
    }
    let output = run(link.args(&objects).arg("-o").arg(&binary));
    assert!(
        output.status.success(),
        "linking failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let filters: Vec<String> = std::env::var("EMBER_EMULATION_CASES")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let output = run(Command::new(&binary).args(&filters));
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the emulated kernels failed ({}): see the FAIL lines above",
        output.status
    );
}
