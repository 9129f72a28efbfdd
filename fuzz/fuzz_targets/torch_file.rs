//! A `pytorch_model.bin` (`torch.save`'s zip archive of a pickled state dict and its storages)
//! → `TorchFile::from_bytes`: `Ok` or `Err`, never a panic, never an allocation past the
//! pickle reader's caps; every tensor of an accepted file reads as exactly `∏ shape` values.
//!
//! The first byte picks the input's kind. Even: the rest is the whole file (the zip reader and
//! everything after it). Odd: the rest is `data.pkl`, put back into tiny-bert-torchbin's archive
//! beside its real storages with a correct CRC (a mutated pickle would otherwise almost never
//! get past the archive's checksum), so the pickle interpreter and the tensor validation see
//! inputs that reach them.

#![no_main]

use std::io::{Cursor, Read, Write};
use std::sync::OnceLock;

use ember_tensor::TorchFile;
use libfuzzer_sys::fuzz_target;
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// tiny-bert-torchbin's archive entries, `(name, bytes)` in the archive's order.
fn fixture_entries() -> &'static [(String, Vec<u8>)] {
    static ENTRIES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tiny-bert-torchbin/pytorch_model.bin"
        );
        let bytes = std::fs::read(path).expect("the fixture archive");
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a zip archive");
        (0..archive.len())
            .map(|i| {
                let mut entry = archive.by_index(i).expect("an entry");
                let mut data = Vec::new();
                entry.read_to_end(&mut data).expect("its bytes");
                (entry.name().to_owned(), data)
            })
            .collect()
    })
}

/// The fixture's archive with `pickle` as its `data.pkl`, STORED as torch stores it.
fn archive_with_pickle(pickle: &[u8]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for (name, data) in fixture_entries() {
        let data: &[u8] = if name.ends_with("/data.pkl") {
            pickle
        } else {
            data
        };
        writer.start_file(name.as_str(), stored).expect("an entry");
        writer.write_all(data).expect("its bytes");
    }
    writer.finish().expect("the archive").into_inner()
}

fn check(bytes: Vec<u8>) {
    let Ok(file) = TorchFile::from_bytes("fuzz/pytorch_model.bin", bytes) else {
        return;
    };
    for (name, info) in file.iter() {
        let tensor = file.f32_tensor(name).expect("a validated tensor reads");
        assert_eq!(tensor.data().len(), info.num_elements(), "{name}");
        if file.is_contiguous(name) == Some(true) {
            assert!(file.raw_bytes(name).is_ok(), "{name}");
        }
    }
    for (name, _) in file.unsupported_tensors() {
        assert!(file.f32_tensor(name).is_err(), "{name}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        check(rest.to_vec());
    } else {
        check(archive_with_pickle(rest));
    }
});
