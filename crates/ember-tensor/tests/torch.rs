//! `torch.save` archives: files written by torch itself (`tests/fixtures/torch-save/`, from
//! `tests/reference/make_reference.py`) read to exactly what `torch.load` reads, and hostile or
//! corrupt archives and pickles, built here byte by byte, refused with a message that says why.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use ember_tensor::{
    crc32, find_weight_file, DType, SafeTensorsFile, TensorError, TorchFile, WeightFile,
};
use serde_json::Value;

/// Passes every request to `System`; on a thread that is [`measure`]-ing, also tracks the
/// largest single request and the peak of the bytes live. Thread-local, so that the tests
/// running beside a measured one do not count.
struct MeasuringAllocator;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

impl MeasuringAllocator {
    /// Books `grown` bytes requested in one piece and `freed` bytes released.
    fn book(grown: usize, freed: usize) {
        // `try_with`: allocations while the thread is being torn down are not counted.
        let _ = MEASURING.try_with(|measuring| {
            if !measuring.get() {
                return;
            }
            let live = LIVE.with(|live| {
                live.set((live.get() + grown).saturating_sub(freed));
                live.get()
            });
            PEAK.with(|peak| peak.set(peak.get().max(live)));
            LARGEST.with(|largest| largest.set(largest.get().max(grown)));
        });
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for MeasuringAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::book(layout.size(), 0);
        // SAFETY: the caller's guarantees for `layout` are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::book(layout.size(), 0);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::book(new_size, layout.size());
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::book(0, layout.size());
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: MeasuringAllocator = MeasuringAllocator;

/// What [`measure`] saw: the largest single request and the peak of the bytes live, on this
/// thread.
#[derive(Debug)]
struct Measured {
    largest: usize,
    peak: usize,
}

fn measure<T>(f: impl FnOnce() -> T) -> (T, Measured) {
    LIVE.with(|c| c.set(0));
    PEAK.with(|c| c.set(0));
    LARGEST.with(|c| c.set(0));
    MEASURING.with(|c| c.set(true));
    let result = f();
    MEASURING.with(|c| c.set(false));
    let measured = Measured {
        largest: LARGEST.with(Cell::get),
        peak: PEAK.with(Cell::get),
    };
    (result, measured)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn torch_save_fixture(name: &str) -> PathBuf {
    fixtures().join("torch-save").join(name)
}

fn expected() -> Value {
    let path = torch_save_fixture("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn usizes(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

/// Every tensor `torch.load` read from `file`, against ours: shape, contiguity, values bit for
/// bit; contiguous F32 in place.
fn check_against_torch(file_name: &str) -> TorchFile {
    let file = TorchFile::open(torch_save_fixture(file_name)).unwrap();
    let expected = expected();
    let tensors = expected["files"][file_name].as_object().unwrap();
    for (name, want) in tensors {
        let shape = usizes(&want["shape"]);
        let contiguous = want["contiguous"].as_bool().unwrap();
        assert_eq!(
            file.is_contiguous(name),
            Some(contiguous),
            "{file_name}: {name}"
        );
        let Some(values) = want.get("values") else {
            // An integer buffer: validated, listed, refused as f32.
            assert_eq!(want["dtype"], "int64");
            assert!(file
                .unsupported_tensors()
                .any(|(n, d)| n == name && d == "I64"));
            let err = file.f32_tensor(name).unwrap_err();
            assert!(matches!(err, TensorError::UnsupportedDType { .. }), "{err}");
            assert!(err.to_string().contains("\"I64\""), "{err}");
            continue;
        };
        let tensor = file.f32_tensor_with_shape(name, &shape).unwrap();
        let want: Vec<u32> = values
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v.as_f64().unwrap() as f32).to_bits())
            .collect();
        let got: Vec<u32> = tensor.data().iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{file_name}: {name}");
        let dtype = match want_dtype(&expected["files"][file_name][name]) {
            "float32" => DType::F32,
            "float16" => DType::F16,
            "bfloat16" => DType::BF16,
            other => panic!("{other}"),
        };
        assert_eq!(tensor.stored_dtype(), dtype);
        assert_eq!(
            tensor.is_mapped(),
            contiguous && dtype == DType::F32 && cfg!(target_endian = "little"),
            "{file_name}: {name}"
        );
    }
    assert_eq!(
        file.len() + file.unsupported_tensors().count(),
        tensors.len()
    );
    file
}

fn want_dtype(entry: &Value) -> &str {
    entry["dtype"].as_str().unwrap()
}

#[test]
fn shared_storages_offsets_and_strides_read_as_torch_reads_them() {
    let file = check_against_torch("views.pt");
    // `tied` is the same tensor as `base`, `tail` is `base[1:]`: one storage, in place.
    let base = file.info("base").unwrap().byte_range.clone();
    assert_eq!(file.info("tied").unwrap().byte_range, base);
    let tail = &file.info("tail").unwrap().byte_range;
    assert_eq!((tail.start, tail.end), (base.start + 16, base.end));
    assert_eq!(base.start % 64, 0, "torch aligns storages to 64 bytes");
    let base_bytes = file.raw_bytes("base").unwrap();
    assert_eq!(file.raw_bytes("tail").unwrap(), &base_bytes[16..]);
    // A transposed view has no bytes of its own; as f32 it is copied, row-major.
    let err = file.raw_bytes("transposed").unwrap_err();
    assert!(
        err.to_string().contains("\"transposed\" is not contiguous"),
        "{err}"
    );
    assert!(!file.f32_tensor("column").unwrap().is_mapped());
    assert_eq!(file.f32_tensor("scale").unwrap().shape(), &[] as &[usize]);
    assert!(file.f32_tensor("empty").unwrap().data().is_empty());
}

#[test]
fn f16_bf16_and_pickle_protocol_4_read_as_torch_reads_them() {
    check_against_torch("half_proto4.pt");
}

#[test]
fn a_checkpoint_wrapping_its_state_dict_is_unwrapped() {
    let file = check_against_torch("wrapped.pt");
    assert_eq!(file.names().collect::<Vec<_>>(), ["w"]);
}

#[test]
fn the_legacy_format_is_refused_by_name() {
    let err = TorchFile::open(torch_save_fixture("legacy.pt")).unwrap_err();
    assert!(matches!(err, TensorError::LegacyTorchFormat { .. }));
    let message = err.to_string();
    assert!(
        message.contains("legacy.pt") && message.contains("legacy (pre-PyTorch-1.6"),
        "{message}"
    );
}

#[test]
fn tiny_bert_bin_holds_the_safetensors_tensors_bit_for_bit() {
    let bin = TorchFile::open(fixtures().join("tiny-bert-torchbin/pytorch_model.bin")).unwrap();
    let st = SafeTensorsFile::open(fixtures().join("tiny-bert/model.safetensors")).unwrap();
    assert_eq!(
        bin.names().collect::<Vec<_>>(),
        st.names().collect::<Vec<_>>()
    );
    for name in st.names() {
        let (a, b) = (st.f32_tensor(name).unwrap(), bin.f32_tensor(name).unwrap());
        assert_eq!(a.shape(), b.shape(), "{name}");
        assert!(
            b.is_mapped() || cfg!(target_endian = "big"),
            "{name} copied"
        );
        let bits =
            |t: &ember_tensor::F32Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "{name}");
        assert_eq!(st.raw_bytes(name).unwrap(), bin.raw_bytes(name).unwrap());
    }
    // Older transformers saved the int64 position_ids buffer; it must not stop the file.
    assert_eq!(
        bin.unsupported_tensors().collect::<Vec<_>>(),
        [("embeddings.position_ids", "I64")]
    );
}

#[test]
fn from_bytes_reads_what_open_reads() {
    let path = fixtures().join("tiny-bert-torchbin/pytorch_model.bin");
    let opened = TorchFile::open(&path).unwrap();
    let read = TorchFile::from_bytes("in-memory.bin", std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(read.path(), Path::new("in-memory.bin"));
    assert_eq!(
        read.names().collect::<Vec<_>>(),
        opened.names().collect::<Vec<_>>()
    );
    for name in opened.names() {
        assert_eq!(
            read.raw_bytes(name).unwrap(),
            opened.raw_bytes(name).unwrap(),
            "{name}"
        );
    }
    let err = TorchFile::from_bytes("empty.bin", Vec::new()).unwrap_err();
    assert!(err.to_string().contains("empty.bin"), "{err}");
}

#[test]
fn weight_files_of_either_format_open_through_one_type() {
    let st_dir = fixtures().join("tiny-bert");
    let bin_dir = fixtures().join("tiny-bert-torchbin");
    let st = WeightFile::open(find_weight_file(&st_dir).unwrap()).unwrap();
    let bin = WeightFile::open(find_weight_file(&bin_dir).unwrap()).unwrap();
    assert!(matches!(st, WeightFile::SafeTensors(_)) && matches!(bin, WeightFile::Torch(_)));
    assert_eq!(st.len(), bin.len());
    assert!(bin.path().ends_with("pytorch_model.bin"));
    let name = "encoder.layer.0.attention.self.query.weight";
    assert!(st.contains(name) && bin.contains(name));
    assert_eq!(st.info(name).unwrap().shape, bin.info(name).unwrap().shape);
    assert_eq!(
        st.f32_tensor_with_shape(name, &[52, 52]).unwrap().data(),
        bin.f32_tensor_with_shape(name, &[52, 52]).unwrap().data()
    );

    // Content decides for names that say nothing: a zip is a torch archive.
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("weights");
    std::fs::copy(torch_save_fixture("views.pt"), &renamed).unwrap();
    assert!(matches!(
        WeightFile::open(&renamed).unwrap(),
        WeightFile::Torch(_)
    ));

    let err = find_weight_file(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("pytorch_model.bin"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile and corrupt archives, built here
// ---------------------------------------------------------------------------------------------

/// Offsets of the pieces of an archive from [`zip_archive`], for corrupting them.
struct ZipLayout {
    /// Local header offset of each entry.
    local: Vec<usize>,
    /// Central header offset of each entry.
    central: Vec<usize>,
    /// End-of-central-directory record.
    end: usize,
}

/// A STORED zip archive as torch writes it (data 64-byte aligned through local extra padding),
/// without zip64 records.
fn zip_archive(entries: &[(&str, &[u8])]) -> (Vec<u8>, ZipLayout) {
    let mut out = Vec::new();
    let mut layout = ZipLayout {
        local: Vec::new(),
        central: Vec::new(),
        end: 0,
    };
    for (name, data) in entries {
        layout.local.push(out.len());
        let unpadded = out.len() + 30 + name.len();
        let pad = (64 - unpadded % 64) % 64;
        let pad = if pad > 0 && pad < 4 { pad + 64 } else { pad };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc32(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        if pad > 0 {
            // An unknown extra field of `pad - 4` zero bytes, as torch pads.
            out.extend_from_slice(&0x4b46u16.to_le_bytes());
            out.extend_from_slice(&((pad - 4) as u16).to_le_bytes());
            out.resize(out.len() + pad - 4, 0);
        }
        out.extend_from_slice(data);
    }
    let cd_start = out.len();
    for ((name, data), &local) in entries.iter().zip(&layout.local) {
        layout.central.push(out.len());
        out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc32(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(&(local as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    let cd_size = out.len() - cd_start;
    layout.end = out.len();
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(cd_size as u32).to_le_bytes());
    out.extend_from_slice(&(cd_start as u32).to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    (out, layout)
}

/// A pickle, opcode by opcode.
#[derive(Default, Clone)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn proto2() -> Self {
        Pickle(vec![0x80, 2])
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn global(self, module: &str, name: &str) -> Self {
        self.raw(format!("c{module}\n{name}\n").as_bytes())
    }
    /// SHORT_BINUNICODE: a string of at most 255 bytes in 2 bytes of header.
    fn short_string(mut self, s: &str) -> Self {
        self.0.push(0x8c);
        self.0
            .push(u8::try_from(s.len()).expect("at most 255 bytes"));
        self.raw(s.as_bytes())
    }
    fn string(mut self, s: &str) -> Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.raw(s.as_bytes())
    }
    /// LONG1 of 8 bytes: any i64.
    fn int(mut self, n: i64) -> Self {
        self.0.extend_from_slice(&[0x8a, 8]);
        self.raw(&n.to_le_bytes())
    }
    fn int_tuple(self, values: &[i64]) -> Self {
        values
            .iter()
            .fold(self.raw(b"("), |p, &v| p.int(v))
            .raw(b"t")
    }
    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    fn tensor(self, spec: &TensorSpec) -> Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .raw(b"((")
            .string("storage")
            .global("torch", spec.class)
            .string("0")
            .string("cpu")
            .int(spec.numel)
            .raw(b"tQ")
            .int(spec.offset)
            .int_tuple(&spec.shape)
            .int_tuple(&spec.stride)
            .raw(b"\x89")
            .global("collections", "OrderedDict")
            .raw(b")R")
            .raw(b"tR")
    }
    /// `OrderedDict(name=tensor)`.
    fn state_dict(spec: &TensorSpec) -> Self {
        Pickle::proto2()
            .global("collections", "OrderedDict")
            .raw(b")R")
            .string(spec.name)
            .tensor(spec)
            .raw(b"s.")
    }
}

struct TensorSpec {
    name: &'static str,
    class: &'static str,
    numel: i64,
    offset: i64,
    shape: Vec<i64>,
    stride: Vec<i64>,
}

/// A 3 × 4 F32 tensor over a 12-element storage, in row-major order.
fn good_spec() -> TensorSpec {
    TensorSpec {
        name: "dense.weight",
        class: "FloatStorage",
        numel: 12,
        offset: 0,
        shape: vec![3, 4],
        stride: vec![4, 1],
    }
}

const STORAGE_BYTES: usize = 48;

/// `archive/data.pkl` = `pickle`, `archive/data/0` = `storage_len` bytes.
fn torch_archive(pickle: &[u8], storage_len: usize) -> (Vec<u8>, ZipLayout) {
    let storage: Vec<u8> = (0..storage_len).map(|i| i as u8).collect();
    zip_archive(&[
        ("archive/data.pkl", pickle),
        ("archive/byteorder", b"little"),
        ("archive/data/0", &storage),
        ("archive/version", b"3\n"),
    ])
}

/// Writes `bytes` as `hostile.bin` and opens it; returns the error's message after checking it
/// names the file.
fn open_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.bin");
    std::fs::write(&path, bytes).unwrap();
    let message = match TorchFile::open(&path) {
        Ok(file) => panic!("opened: {file:?}"),
        Err(err) => err.to_string(),
    };
    assert!(message.contains("hostile.bin"), "{message}");
    message
}

fn pickle_error(pickle: &Pickle) -> String {
    open_error(&torch_archive(&pickle.0, STORAGE_BYTES).0)
}

fn spec_error(spec: &TensorSpec) -> String {
    let message = pickle_error(&Pickle::state_dict(spec));
    assert!(
        message.contains(&format!("tensor \"{}\"", spec.name)),
        "{message}"
    );
    message
}

#[test]
fn the_builders_make_a_valid_archive() {
    let (bytes, _) = torch_archive(&Pickle::state_dict(&good_spec()).0, STORAGE_BYTES);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.bin");
    std::fs::write(&path, &bytes).unwrap();
    let file = TorchFile::open(&path).unwrap();
    let tensor = file.f32_tensor_with_shape("dense.weight", &[3, 4]).unwrap();
    assert!(tensor.is_mapped());
    assert_eq!(
        file.raw_bytes("dense.weight").unwrap(),
        &(0..48).collect::<Vec<u8>>()[..]
    );
}

#[test]
fn globals_outside_the_allow_list_are_refused_without_running_them() {
    // os.system("echo pwned") through GLOBAL + REDUCE: refused at the GLOBAL, byte 2.
    let os_system = Pickle::proto2()
        .global("os", "system")
        .string("echo pwned")
        .raw(b"\x85R.");
    let message = pickle_error(&os_system);
    assert!(
        message.contains("archive/data.pkl: pickle global \"os.system\" at byte 2 is not allowed"),
        "{message}"
    );
    // builtins.eval through STACK_GLOBAL (protocol 4).
    let eval = Pickle(vec![0x80, 4])
        .raw(b"\x8c\x08builtins\x8c\x04eval\x93")
        .string("1+1")
        .raw(b"\x85R.");
    let message = pickle_error(&eval);
    assert!(
        message.contains("\"builtins.eval\" at byte 18"),
        "{message}"
    );
    // An object's __reduce__ naming its own class.
    let custom = Pickle::proto2().global("__main__", "Exploit").raw(b")R.");
    assert!(pickle_error(&custom).contains("\"__main__.Exploit\""));
    // torch itself, beyond the rebuild functions: torch.load is not on the list.
    let torch_load = Pickle::proto2().global("torch", "load").raw(b")R.");
    assert!(pickle_error(&torch_load).contains("\"torch.load\""));
    // Allowed globals used for something else are refused too.
    let storage_call = Pickle::proto2().global("torch", "FloatStorage").raw(b")R.");
    assert!(pickle_error(&storage_call).contains("storages may only appear in persistent ids"));
    let call_a_string = Pickle::proto2().string("os.system").raw(b")R.");
    assert!(pickle_error(&call_a_string).contains("REDUCE calls a str"));
}

#[test]
fn opcodes_outside_the_subset_are_refused_by_name() {
    let cases: [(&[u8], &str); 7] = [
        (b"(ios\nsystem\nX\x00\x00\x00\x00.", "INST (0x69)"),
        (b"(cos\nsystem\no.", "\"os.system\""),
        (b"()o.", "OBJ (0x6f)"),
        (b")}\x81.", "NEWOBJ (0x81)"),
        (b"\x82\x01.", "EXT1 (0x82)"),
        (b"Pfoo\n.", "PERSID (0x50)"),
        (b"K\x01\x32.", "DUP (0x32)"),
    ];
    for (body, expected) in cases {
        let message = pickle_error(&Pickle::proto2().raw(body));
        assert!(message.contains(expected), "{expected}: {message}");
    }
    let message = pickle_error(&Pickle::proto2().raw(b"()o."));
    assert!(
        message.contains("pickle opcode OBJ (0x6f) at byte 4 is not supported"),
        "{message}"
    );
}

#[test]
fn tensors_that_do_not_fit_their_storage_are_refused() {
    let base = good_spec;
    let cases: Vec<(TensorSpec, &str)> = vec![
        (
            TensorSpec {
                numel: 100,
                ..base()
            },
            "declares 100 F32 elements but the entry holds 48 bytes",
        ),
        (
            TensorSpec {
                numel: i64::MAX,
                ..base()
            },
            "declares 9223372036854775807 F32 elements",
        ),
        (
            TensorSpec {
                numel: -1,
                ..base()
            },
            "declares -1 F32 elements",
        ),
        (
            TensorSpec {
                shape: vec![-1, 4],
                ..base()
            },
            "size [-1, 4] has a negative entry",
        ),
        (
            TensorSpec {
                stride: vec![4, -1],
                ..base()
            },
            "stride [4, -1] has a negative entry",
        ),
        (
            TensorSpec {
                offset: -4,
                ..base()
            },
            "storage offset -4 is negative",
        ),
        (
            TensorSpec {
                offset: 1,
                ..base()
            },
            "reach past the 12 elements of its storage",
        ),
        (
            TensorSpec {
                shape: vec![1 << 20, 4],
                ..base()
            },
            "reach past the 12 elements",
        ),
        (
            TensorSpec {
                shape: vec![1 << 62, 1 << 62],
                stride: vec![0, 0],
                ..base()
            },
            "overflows usize",
        ),
        (
            TensorSpec {
                shape: vec![100],
                stride: vec![0],
                ..base()
            },
            "overlapping (expanded) views are not supported",
        ),
        (
            TensorSpec {
                shape: vec![3, 4, 1],
                ..base()
            },
            "size has 3 dimensions but its stride 2",
        ),
        (
            TensorSpec {
                shape: vec![1; 17],
                stride: vec![1; 17],
                ..base()
            },
            "at most 16 are supported",
        ),
    ];
    for (spec, expected) in cases {
        let message = if expected.contains("dimensions") || expected.contains("at most 16") {
            pickle_error(&Pickle::state_dict(&spec))
        } else {
            spec_error(&spec)
        };
        assert!(message.contains(expected), "{expected}: {message}");
    }
    // A storage class Ember does not read is validated, then refused when asked for.
    let (bytes, _) = torch_archive(
        &Pickle::state_dict(&TensorSpec {
            class: "LongStorage",
            numel: 6,
            shape: vec![2, 3],
            stride: vec![3, 1],
            ..base()
        })
        .0,
        STORAGE_BYTES,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.bin");
    std::fs::write(&path, bytes).unwrap();
    let file = TorchFile::open(&path).unwrap();
    let err = file.f32_tensor("dense.weight").unwrap_err().to_string();
    assert!(err.contains("\"I64\" is not supported"), "{err}");
    // The storage entry must exist.
    let (bytes, _) = zip_archive(&[("archive/data.pkl", &Pickle::state_dict(&base()).0)]);
    assert!(open_error(&bytes).contains("storage entry \"archive/data/0\" is not in the archive"));
}

#[test]
fn malformed_pickles_are_refused_with_their_offset() {
    let cases: [(Pickle, &str); 11] = [
        (
            Pickle::proto2().raw(b"."),
            "bad pickle at byte 2: stack underflow in STOP",
        ),
        (
            Pickle::proto2().raw(b"h\x05."),
            "memo key 5 was never stored",
        ),
        (
            Pickle::proto2().raw(b"X\xff\xff\xff\xff"),
            "truncated: BINUNICODE needs 4294967295 more bytes",
        ),
        (Pickle::proto2().raw(b"}"), "truncated: no STOP opcode"),
        (
            Pickle::proto2().raw(b"K\x01."),
            "the pickled object is a int, not a dict of tensors",
        ),
        (
            Pickle::proto2().raw(b"}(K\x01u."),
            "SETITEMS with an odd number of values",
        ),
        (
            Pickle::proto2().raw(b"K\x01K\x02K\x03s."),
            "SETITEM on a int, not a dict",
        ),
        (Pickle::proto2().raw(b"]K\x01b."), "BUILD on a list"),
        (
            Pickle::proto2().raw(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01."),
            "LONG1 of 9 bytes",
        ),
        (Pickle::proto2().raw(b"t."), "TUPLE without a MARK"),
        (
            Pickle::proto2()
                .global("collections", "OrderedDict")
                .raw(b"(K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01tR."),
            "REDUCE with 8 arguments",
        ),
    ];
    for (pickle, expected) in cases {
        let message = pickle_error(&pickle);
        assert!(message.contains(expected), "{expected}: {message}");
    }
    // A MARK fences the stack: ops after it cannot reach below it.
    let message = pickle_error(&Pickle::proto2().raw(b"}(s."));
    assert!(message.contains("stack underflow in SETITEM"), "{message}");
}

#[test]
fn cycles_and_deep_nesting_cannot_exhaust_the_stack_or_leak() {
    // A dict that contains itself, then STOP: a dict with no tensors.
    let cyclic = Pickle::proto2()
        .raw(b"}q\x00")
        .string("self")
        .raw(b"h\x00s.");
    let (bytes, _) = torch_archive(&cyclic.0, STORAGE_BYTES);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cyclic.bin");
    std::fs::write(&path, bytes).unwrap();
    assert!(TorchFile::open(&path).unwrap().is_empty());
    // 200,000 nested lists: nothing recurses, neither the parse nor the drop.
    let depth = 200_000;
    let mut nested = Pickle::proto2();
    nested.0.resize(2 + depth, b']');
    nested.0.resize(2 + 2 * depth - 1, b'a');
    nested.0.push(b'.');
    assert!(pickle_error(&nested).contains("a list, not a dict"));
}

#[test]
fn a_central_directory_that_lies_is_refused() {
    let pickle = Pickle::state_dict(&good_spec()).0;
    let (good, layout) = torch_archive(&pickle, STORAGE_BYTES);
    let patch = |at: usize, value: &[u8]| {
        let mut bytes = good.clone();
        bytes[at..at + value.len()].copy_from_slice(value);
        bytes
    };
    let storage_entry = 2;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // The storage's size grows past the central directory.
        (
            patch(
                layout.central[storage_entry] + 24,
                &100_000u32.to_le_bytes(),
            ),
            "entry \"archive/data/0\" is STORED but its compressed size 48 differs",
        ),
        (
            {
                let b = patch(
                    layout.central[storage_entry] + 20,
                    &100_000u32.to_le_bytes(),
                );
                let at = layout.central[storage_entry] + 24;
                let mut b = b;
                b[at..at + 4].copy_from_slice(&100_000u32.to_le_bytes());
                b
            },
            "100000 bytes of data from offset",
        ),
        // The entry points at another entry's local header.
        (
            patch(
                layout.central[storage_entry] + 42,
                &(layout.local[0] as u32).to_le_bytes(),
            ),
            "the local header at 0 names another entry",
        ),
        // …or at no local header at all.
        (
            patch(layout.central[storage_entry] + 42, &7u32.to_le_bytes()),
            "no local header at offset 7",
        ),
        // The directory is said to start past the end record.
        (
            patch(layout.end + 16, &(layout.end as u32 + 1).to_le_bytes()),
            "runs past the end records",
        ),
        // More entries than the directory could hold.
        (
            patch(layout.end + 8, &[200, 0, 200, 0]),
            "200 entries cannot fit",
        ),
        // A compressed entry.
        (
            patch(layout.central[storage_entry] + 10, &8u16.to_le_bytes()),
            "is compressed (method 8)",
        ),
        // A central header that is not one.
        (
            patch(layout.central[1], b"XXXX"),
            "central directory entry 1: bad signature",
        ),
        // The pickle's bytes change under its recorded CRC.
        (
            patch(layout.local[0] + 64, b"\x81"),
            "archive/data.pkl: CRC-32 is",
        ),
    ];
    for (bytes, expected) in cases {
        let message = open_error(&bytes);
        assert!(
            message.contains("not a readable torch.save archive"),
            "{message}"
        );
        assert!(message.contains(expected), "{expected}: {message}");
    }
    // Not an archive of torch.save: no <folder>/data.pkl.
    let (other, _) = zip_archive(&[("readme.txt", b"hello")]);
    assert!(open_error(&other).contains("no <folder>/data.pkl entry"));
    // A zip64 locator (as torch writes) that points nowhere.
    let real = std::fs::read(torch_save_fixture("views.pt")).unwrap();
    let end = real.len() - 22;
    let locator = end - 20;
    let mut bytes = real.clone();
    bytes[locator + 8..locator + 16].copy_from_slice(&(real.len() as u64).to_le_bytes());
    assert!(open_error(&bytes).contains("zip64 locator points to"));
}

#[test]
fn truncated_files_are_refused_at_every_length() {
    let real = std::fs::read(torch_save_fixture("views.pt")).unwrap();
    for len in [
        0,
        1,
        21,
        22,
        100,
        real.len() / 2,
        real.len() - 23,
        real.len() - 1,
    ] {
        let message = open_error(&real[..len]);
        assert!(
            message.contains("not a readable torch.save archive"),
            "{len}: {message}"
        );
    }
    for len in 0..real.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.bin");
        std::fs::write(&path, &real[..len]).unwrap();
        assert!(TorchFile::open(&path).is_err(), "{len}");
    }
}

#[test]
fn every_single_byte_corruption_is_an_error_or_still_a_sound_file() {
    // The archive: each byte of a real torch file flipped in turn. Errors or not, never a
    // panic, and whatever opens reads back within bounds.
    let real = std::fs::read(torch_save_fixture("views.pt")).unwrap();
    // The pickle: re-wrapped with a correct CRC, so that the interpreter sees every change.
    let pickle = Pickle::state_dict(&good_spec()).0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flipped.bin");
    let mut opened = 0;
    let mut check = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        if let Ok(file) = TorchFile::open(&path) {
            opened += 1;
            for name in file.names().map(str::to_owned).collect::<Vec<_>>() {
                let tensor = file.f32_tensor(&name).unwrap();
                assert_eq!(
                    tensor.data().len(),
                    tensor.shape().iter().product::<usize>()
                );
            }
        }
    };
    for i in 0..real.len() {
        let mut bytes = real.clone();
        bytes[i] ^= 0x5a;
        check(&bytes);
    }
    for i in 0..pickle.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bytes = pickle.clone();
            bytes[i] ^= flip;
            check(&torch_archive(&bytes, STORAGE_BYTES).0);
        }
    }
    assert!(
        opened > 0,
        "some flips (in padding, names, versions) leave a sound file"
    );
}

/// The interpreter's caps (`pickle.rs`): held objects, stack values and MARKs, tensors.
const MAX_HELD: usize = 1 << 20;
const MAX_TENSORS: usize = 1 << 16;
const MIB: usize = 1 << 20;

/// Opens the archive of `pickle` while measuring; checks the message names the file and the
/// pickle's entry, and that the open kept to the broken-folder rule (no single request over
/// 4 × the file + 64 MiB) and to `peak_mib` live. Returns the message.
fn measured_pickle_error(pickle: &Pickle, peak_mib: usize) -> String {
    let message = measured_open_error(pickle, peak_mib);
    assert!(message.contains("archive/data.pkl"), "{message}");
    message
}

/// [`measured_pickle_error`] for an error that need not be the pickle's.
fn measured_open_error(pickle: &Pickle, peak_mib: usize) -> String {
    let (bytes, _) = torch_archive(&pickle.0, STORAGE_BYTES);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.bin");
    std::fs::write(&path, &bytes).unwrap();
    let (opened, measured) = measure(|| TorchFile::open(&path).map(|_| ()));
    let message = opened.unwrap_err().to_string();
    assert!(message.contains("hostile.bin"), "{message}");
    let rule = 4 * bytes.len() + 64 * MIB;
    assert!(
        measured.largest <= rule && measured.peak <= peak_mib * MIB,
        "{}-byte file: {measured:?} (rule: one request at most {rule}, at most {peak_mib} MiB \
         live): {}",
        bytes.len(),
        &message[..message.len().min(300)]
    );
    message
}

/// `PROTO 2`, `prefix`, then `body` `times` times, and no STOP.
fn flood(prefix: &[u8], body: &[u8], times: usize) -> Pickle {
    let mut pickle = Pickle::proto2().raw(prefix);
    pickle.0.reserve(body.len() * times);
    for _ in 0..times {
        pickle.0.extend_from_slice(body);
    }
    pickle
}

#[test]
fn floods_of_one_byte_opcodes_are_refused_at_the_caps_not_grown_into() {
    // Uncapped, each 1-byte opcode kept 16 to 90 bytes: 10 MB of `]` asked for 1 GiB at once.
    let n = MAX_HELD + 16;
    let held = "more than 1048576 objects, container items and memo entries";
    let cases: [(&str, Pickle, &str); 8] = [
        ("EMPTY_LIST", flood(b"", b"]", n), held),
        ("EMPTY_DICT", flood(b"", b"}", n), held),
        ("EMPTY_TUPLE", flood(b"", b")", n), held),
        ("MARK", flood(b"", b"(", n), "more than 1048576 open MARKs"),
        (
            "NONE",
            flood(b"", b"N", n),
            "stack deeper than 1048576 values",
        ),
        // Each MEMOIZE stores the top under a new key.
        ("MEMOIZE", flood(b"N", b"\x94", n), held),
        // Items appended to one list, set in one dict.
        ("APPEND", flood(b"]", b"Na", n), held),
        ("SETITEM", flood(b"}", b"K\x01K\x01s", n / 2), held),
    ];
    for (what, pickle, expected) in cases {
        let message = measured_pickle_error(&pickle, 128);
        assert!(message.contains(expected), "{what}: {message}");
        assert!(message.contains("refused as hostile"), "{what}: {message}");
    }
}

/// `_rebuild_tensor_v2` memoised as 0, a good tensor's argument tuple as 1, the tensor as 2.
fn memoised_tensor_parts() -> Pickle {
    let spec = good_spec();
    Pickle::proto2()
        .global("torch._utils", "_rebuild_tensor_v2")
        .raw(b"q\x00(")
        .raw(b"(")
        .string("storage")
        .global("torch", spec.class)
        .string("0")
        .string("cpu")
        .int(spec.numel)
        .raw(b"tQ")
        .int(spec.offset)
        .int_tuple(&[1; 16])
        .int_tuple(&[1; 16])
        .raw(b"\x89")
        .global("collections", "OrderedDict")
        .raw(b")R")
        .raw(b"tq\x01")
        .raw(b"h\x00h\x01Rq\x02")
}

#[test]
fn tensors_rebuilt_from_one_memoised_tuple_share_it_and_stop_at_the_cap() {
    // `h0 h1 R`: 5 bytes rebuild a 16-dim tensor from the memoised arguments. Each kept its
    // own 2 × 16 dims (~300 bytes); now it refers to the tuples, and the arena stops at the
    // held cap.
    let pickle = flood(&memoised_tensor_parts().0, b"h\x00h\x01R", MAX_HELD);
    let message = measured_pickle_error(&pickle, 128);
    assert!(
        message.contains("more than 1048576 objects") && message.contains("REDUCE"),
        "{message}"
    );
}

#[test]
fn a_state_dict_of_more_than_the_tensor_cap_is_refused() {
    // 65,537 names, each naming the one memoised tensor: ~9 bytes an entry, each of which
    // kept a name and 2 × 16 dims.
    let mut pickle = memoised_tensor_parts()
        .global("collections", "OrderedDict")
        .raw(b")R(");
    for i in 0..=MAX_TENSORS {
        pickle = pickle.short_string(&format!("t{i}")).raw(b"h\x02");
    }
    let pickle = pickle.raw(b"u.");
    let message = measured_pickle_error(&pickle, 64);
    assert!(message.contains("more than 65536 tensors"), "{message}");
}

#[test]
fn a_long_storage_key_named_by_many_tensors_is_copied_once() {
    // A 60,000-byte key in a memoised persistent id, loaded by 4,096 BINPERSIDs (3 bytes
    // each) for 4,096 tensors: copied per storage object, that was 245 MB from a 100 kB file.
    let key = "k".repeat(60_000);
    let mut pickle = Pickle::proto2()
        .global("torch._utils", "_rebuild_tensor_v2")
        .raw(b"q\x00(")
        .string("storage")
        .global("torch", "FloatStorage")
        .string(&key)
        .string("cpu")
        .int(12)
        .raw(b"tq\x01")
        .global("collections", "OrderedDict")
        .raw(b")R(");
    for i in 0..4096 {
        // _rebuild_tensor_v2(BINPERSID(pid), 0, (), (), False, OrderedDict()): a scalar.
        pickle = pickle
            .short_string(&format!("t{i}"))
            .raw(b"h\x00(h\x01QK\x00)))\x89}tR");
    }
    let pickle = pickle.raw(b"u.");
    let message = measured_open_error(&pickle, 16);
    // The storage is found once and refused once: the archive has no entry of that name.
    assert!(
        message.contains(&format!("storage entry \"archive/data/{key}\" is not in")),
        "{}",
        &message[..message.len().min(300)]
    );
}
