//! Model folders that ship `pytorch_model.bin` (a `torch.save` archive) instead of
//! `model.safetensors`: the same embeddings, bit for bit, and the folder rules around the choice.

use std::path::Path;

use ember::Embedder;
use ember_reference_tests::*;
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
