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
            .map_err(CliError::stdout);
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

/// Reads a float32 `[rows, dim]` `.npy` as [`write_npy`] writes it (format 1.0 or 2.0,
/// `'<f4'`, C order). Anything else is an error naming the file and what is wrong.
pub fn read_npy(path: &Path) -> Result<Embeddings, CliError> {
    let name = path.display().to_string();
    let bad = |message: &str| {
        CliError::Usage(format!("{name}: not a float32 [rows, dim] .npy: {message}"))
    };
    let bytes = std::fs::read(path).map_err(|source| CliError::Io {
        path: name.clone(),
        source,
    })?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no NumPy magic"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown format version")),
    };
    let data_start = start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| bad("header runs past the end of the file"))?;
    let header =
        std::str::from_utf8(&bytes[start..data_start]).map_err(|_| bad("header is not text"))?;
    let squashed: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !squashed.contains("'descr':'<f4'") {
        return Err(bad("dtype is not little-endian float32 ('<f4')"));
    }
    if !squashed.contains("'fortran_order':False") {
        return Err(bad("array is not in C order"));
    }
    let shape = squashed
        .split("'shape':(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse()
                .map_err(|_| bad("shape is not a tuple of integers"))
        })
        .collect::<Result<_, _>>()?;
    let [rows, dim] = dims[..] else {
        return Err(bad("shape is not two-dimensional"));
    };
    let data = &bytes[data_start..];
    if rows.checked_mul(dim).and_then(|n| n.checked_mul(4)) != Some(data.len()) {
        return Err(bad(&format!(
            "{} data bytes for shape ({rows}, {dim})",
            data.len()
        )));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Embeddings::from_vec(values, rows, dim).map_err(CliError::from)
}
