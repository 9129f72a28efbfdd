//! Writing embeddings: JSON lines or a float32 `.npy`, to stdout or atomically to a file.

use std::io::{BufWriter, Write};
use std::path::Path;

use ember::Embeddings;

use crate::CliError;

/// Writes `embeddings` to `path` (stdout when `None`): `.npy` when the name ends so, JSON lines
/// otherwise. A file is written under a temporary name beside it and renamed when complete.
pub fn write_embeddings(embeddings: &Embeddings, path: Option<&Path>) -> Result<(), CliError> {
    let Some(path) = path else {
        let stdout = std::io::stdout();
        let mut out = BufWriter::new(stdout.lock());
        return write_json_lines(&mut out, embeddings)
            .and_then(|()| out.flush())
            .map_err(|source| CliError::Io {
                path: "standard output".into(),
                source,
            });
    };
    let name = path.display().to_string();
    let io_error = |source| CliError::Io {
        path: name.clone(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| CliError::Usage(format!("--output {name} is not a file name")))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".{}.partial", std::process::id()));
    let temp = path.with_file_name(temp_name);

    let result = (|| {
        let file = std::fs::File::create(&temp)?;
        let mut out = BufWriter::new(file);
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
        {
            write_npy(&mut out, embeddings)?;
        } else {
            write_json_lines(&mut out, embeddings)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(io_error)
}

fn write_json_lines(out: &mut impl Write, embeddings: &Embeddings) -> std::io::Result<()> {
    for row in embeddings.rows() {
        serde_json::to_writer(&mut *out, row)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// NumPy format 1.0: magic, header length, a Python-dict header padded to 64 bytes, then the
/// little-endian f32 data.
fn write_npy(out: &mut impl Write, embeddings: &Embeddings) -> std::io::Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        embeddings.len(),
        embeddings.dim()
    );
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    out.write_all(b"\x93NUMPY\x01\x00")?;
    let header_len = u16::try_from(header.len())
        .map_err(|_| std::io::Error::other("npy header longer than 65535 bytes"))?;
    out.write_all(&header_len.to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for &x in embeddings.as_slice() {
        out.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

/// A readable cosine-similarity matrix of `texts`.
pub fn write_similarity(
    out: &mut impl Write,
    texts: &[String],
    embeddings: &Embeddings,
) -> std::io::Result<()> {
    writeln!(
        out,
        "cosine similarity ({} texts, dim {}):",
        texts.len(),
        embeddings.dim()
    )?;
    for (i, text) in texts.iter().enumerate() {
        let shown: String = text.chars().take(48).collect();
        let ellipsis = if text.chars().count() > 48 { "…" } else { "" };
        writeln!(out, "  [{i}] {shown}{ellipsis}")?;
    }
    write!(out, "\n     ")?;
    for j in 0..texts.len() {
        write!(out, " {:>6}", format!("[{j}]"))?;
    }
    writeln!(out)?;
    for i in 0..texts.len() {
        write!(out, "  {:<3}", format!("[{i}]"))?;
        for j in 0..texts.len() {
            let similarity = ember::similarity::cosine(embeddings.row(i), embeddings.row(j));
            write!(out, " {similarity:>6.3}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
