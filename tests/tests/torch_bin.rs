//! Model folders that ship `pytorch_model.bin` (a `torch.save` archive) instead of
//! `model.safetensors`: the same embeddings, bit for bit, and the folder rules around the choice.

use std::path::Path;

use ember::Embedder;
use ember_bert::{BertConfig, BertModel, F32WeightReader, Workspace};
use ember_reference_tests::*;
use ember_tensor::WeightFile;
use serde::Deserialize;

#[derive(Deserialize)]
struct TinyReference {
    texts: Vec<String>,
}

fn load_error(dir: &Path) -> String {
    match Embedder::from_dir(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_pytorch_model_bin_folder_embeds_bit_for_bit_like_its_safetensors_twin() {
    let texts = read_fixture::<TinyReference>("tiny_reference.json").texts;
    let safetensors = Embedder::builder()
        .threads(2)
        .load_dir(&fixtures_dir().join("tiny-bert"))
        .unwrap();
    let torch_bin_dir = fixtures_dir().join("tiny-bert-torchbin");
    assert!(!torch_bin_dir.join("model.safetensors").exists());
    let torch_bin = Embedder::builder()
        .threads(2)
        .load_dir(&torch_bin_dir)
        .unwrap();
    let a = safetensors.encode(&texts).unwrap();
    let b = torch_bin.encode(&texts).unwrap();
    assert_eq!(a.len(), texts.len());
    for i in 0..texts.len() {
        let bits = |row: &[f32]| row.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a.row(i)), bits(b.row(i)), "text {i}");
    }
}

#[test]
fn safetensors_is_preferred_and_a_broken_one_is_not_skipped() {
    // Both files: model.safetensors is read, so a junk pytorch_model.bin does not matter.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("tiny-bert"), dir.path());
    std::fs::write(dir.path().join("pytorch_model.bin"), b"not an archive").unwrap();
    Embedder::from_dir(dir.path()).unwrap();

    // A broken model.safetensors is reported, not silently replaced by the .bin.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("tiny-bert-torchbin"), dir.path());
    std::fs::write(dir.path().join("model.safetensors"), b"").unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn a_folder_without_weights_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("tiny-bert-torchbin"), dir.path());
    std::fs::remove_file(dir.path().join("pytorch_model.bin")).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("no weights: neither model.safetensors nor pytorch_model.bin exists"),
        "{err}"
    );
}

#[test]
fn unreadable_pytorch_model_bins_are_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("tiny-bert-torchbin"), dir.path());
    let bin = dir.path().join("pytorch_model.bin");
    std::fs::copy(fixtures_dir().join("torch-save/legacy.pt"), &bin).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("pytorch_model.bin") && err.contains("legacy"),
        "{err}"
    );

    let real = std::fs::read(fixtures_dir().join("tiny-bert-torchbin/pytorch_model.bin")).unwrap();
    std::fs::write(&bin, &real[..real.len() / 2]).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("pytorch_model.bin") && err.contains("not a readable torch.save archive"),
        "{err}"
    );

    // An archive of the wrong tensors: the missing one is named, as for safetensors.
    std::fs::copy(fixtures_dir().join("torch-save/views.pt"), &bin).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("pytorch_model.bin") && err.contains("embeddings.word_embeddings.weight"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Strided tensors: torch archives built here
// ---------------------------------------------------------------------------------------------

/// The repository's tiny test model (2 layers, H = 52, F = 76).
fn tiny() -> (BertConfig, WeightFile) {
    let dir = fixtures_dir().join("tiny-bert");
    let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let file = WeightFile::open(dir.join("model.safetensors")).unwrap();
    (config, file)
}

/// Pickle opcodes for the `torch.save` state dict of `tensors` (one F32 storage each, key
/// = index), written the way torch writes it (protocol 2).
struct StateDictPickle(Vec<u8>);

impl StateDictPickle {
    fn string(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn global(&mut self, module: &str, name: &str) {
        self.0
            .extend_from_slice(format!("c{module}\n{name}\n").as_bytes());
    }
    fn int(&mut self, n: usize) {
        self.0.push(b'J');
        self.0.extend_from_slice(&(n as i32).to_le_bytes());
    }
    fn ints(&mut self, values: &[usize]) {
        self.0.push(b'(');
        values.iter().for_each(|&v| self.int(v));
        self.0.push(b't');
    }
}

/// Writes `tensors` (`[n, k]` or `[n]`, row-major values) as a `torch.save` archive at
/// `path`. The 2-D tensors named in `transposed` are stored as torch stores
/// `w.t().contiguous().t()`: a storage holding `wᵀ` row-major, viewed with strides `(1, n)`.
fn write_torch_archive(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    transposed: &[&str],
) {
    let mut pickle = StateDictPickle(vec![0x80, 2]);
    pickle.global("collections", "OrderedDict");
    pickle.0.extend_from_slice(b")R(");
    let mut entries = Vec::new();
    for (key, (name, shape, values)) in tensors.iter().enumerate() {
        let (storage, stride) = match shape[..] {
            [n, k] if transposed.contains(&name.as_str()) => {
                let columns = (0..k).flat_map(|j| (0..n).map(move |i| values[i * k + j]));
                (columns.collect::<Vec<f32>>(), vec![1, n])
            }
            [_, k] => (values.clone(), vec![k, 1]),
            _ => (values.clone(), vec![1]),
        };
        pickle.string(name);
        pickle.global("torch._utils", "_rebuild_tensor_v2");
        pickle.0.extend_from_slice(b"((");
        pickle.string("storage");
        pickle.global("torch", "FloatStorage");
        pickle.string(&key.to_string());
        pickle.string("cpu");
        pickle.int(values.len());
        pickle.0.extend_from_slice(b"tQ");
        pickle.int(0);
        pickle.ints(shape);
        pickle.ints(&stride);
        pickle.0.push(0x89);
        pickle.global("collections", "OrderedDict");
        pickle.0.extend_from_slice(b")RtR");
        let bytes = storage.iter().flat_map(|v| v.to_le_bytes()).collect();
        entries.push((format!("archive/data/{key}"), bytes));
    }
    pickle.0.extend_from_slice(b"u.");
    entries.insert(0, ("archive/data.pkl".to_owned(), pickle.0));
    entries.insert(1, ("archive/byteorder".to_owned(), b"little".to_vec()));
    let entries: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    std::fs::write(path, zip_archive(&entries)).unwrap();
}

#[test]
fn transposed_views_in_a_torch_archive_load_like_the_contiguous_weights() {
    // One weight of the fused Q/K/V and one plain linear, saved as `w.t().contiguous().t()`:
    // present, readable (gathered row-major), and were reported missing because they have
    // no raw bytes of their own.
    let (config, safetensors) = tiny();
    let transposed = [
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.1.intermediate.dense.weight",
    ];
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = safetensors
        .names()
        .map(|name| {
            let tensor = safetensors.f32_tensor(name).unwrap();
            (
                name.to_owned(),
                tensor.shape().to_vec(),
                tensor.data().to_vec(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_model.bin");
    write_torch_archive(&path, &tensors, &transposed);
    let torch = WeightFile::open(&path).unwrap();
    let WeightFile::Torch(archive) = &torch else {
        panic!("{} is not read as a torch archive", path.display());
    };
    for name in transposed {
        assert_eq!(archive.is_contiguous(name), Some(false), "{name}");
    }

    let ids: Vec<u32> = (0..23).map(|i| 101 + 97 * i).collect();
    let offsets = [0, 9, 23];
    let embed = |file: &WeightFile| {
        let model = BertModel::from_weights(config.clone(), file).unwrap();
        let mut workspace = Workspace::default();
        let out = model.forward(&ids, &offsets, &mut workspace).unwrap();
        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(embed(&torch), embed(&safetensors));
    // The GPU loader's reader too.
    let layer =
        |file: &WeightFile, index: usize| F32WeightReader::new(&config, file).layer(index).unwrap();
    let (a, b) = (layer(&torch, 0), layer(&safetensors, 0));
    assert_eq!(a.qkv.weight, b.qkv.weight);
    let (a, b) = (layer(&torch, 1), layer(&safetensors, 1));
    assert_eq!(a.intermediate.weight, b.intermediate.weight);
}
