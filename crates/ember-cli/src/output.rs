//! Writing embeddings, to stdout or atomically to a file, as rows become ready:
//!
//! - `jsonl`: one JSON array per text; with sharding, one object `{"index": j, "embedding":
//!   [...]}` per text, `j` its 0-based position in the whole input;
//! - `npy`: NumPy format 1.0, float32 `[n, dim]`, C order;
//! - `raw`: the same little-endian f32 values with no header (`n · dim · 4` bytes).
//!
//! A file is written under a temporary name beside it and renamed only once complete, so a
//! failed run leaves nothing behind.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ember::Embeddings;

use crate::CliError;

/// `--output-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON array per text (an object with "index" and "embedding" when sharded).
    Jsonl,
    /// NumPy .npy: float32 [n, dim], C order.
    Npy,
    /// Little-endian float32, row-major, no header: n * dim * 4 bytes.
    Raw,
}

impl OutputFormat {
    /// The format a file name implies: `.npy` → npy; `.f32`, `.bin`, `.raw` → raw; anything
    /// else (and standard output) → jsonl.
    pub fn from_path(path: Option<&Path>) -> Self {
        let extension = path
            .and_then(Path::extension)
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("npy") => OutputFormat::Npy,
            Some("f32" | "bin" | "raw") => OutputFormat::Raw,
            _ => OutputFormat::Jsonl,
        }
    }
}

/// An output being written: the header first (npy), then rows in order, then `finish`.
pub struct EmbeddingWriter {
    out: BufWriter<Box<dyn Write>>,
    format: OutputFormat,
    /// Label each JSON line with its text's index.
    with_index: bool,
    dim: usize,
    rows_left: usize,
    /// What errors call the output.
    name: String,
    /// `(temporary, final)` paths of a file output; the temporary one is removed on drop
    /// unless `finish` renamed it.
    file: Option<(PathBuf, PathBuf)>,
}

impl EmbeddingWriter {
    /// Starts an output of `rows × dim` values at `path` (stdout when `None`).
    pub fn create(
        path: Option<&Path>,
        format: OutputFormat,
        with_index: bool,
        rows: usize,
        dim: usize,
    ) -> Result<Self, CliError> {
        let (out, name, file): (Box<dyn Write>, _, _) = match path {
            None => (
                Box::new(std::io::stdout().lock()),
                "standard output".to_owned(),
                None,
            ),
            Some(path) => {
                let name = path.display().to_string();
                let file_name = path.file_name().ok_or_else(|| {
                    CliError::Usage(format!("--output {name} is not a file name"))
                })?;
                let mut temp_name = std::ffi::OsString::from(".");
                temp_name.push(file_name);
                temp_name.push(format!(".{}.partial", std::process::id()));
                let temp = path.with_file_name(temp_name);
                let file = std::fs::File::create(&temp).map_err(|source| CliError::Io {
                    path: name.clone(),
                    source,
                })?;
                (Box::new(file), name, Some((temp, path.to_owned())))
            }
        };
        let mut writer = Self {
            out: BufWriter::with_capacity(1 << 16, out),
            format,
            with_index,
            dim,
            rows_left: rows,
            name,
            file,
        };
        if format == OutputFormat::Npy {
            let header = npy_header(rows, dim);
            writer
                .out
                .write_all(&header)
                .map_err(|e| writer.io_error(e))?;
        }
        Ok(writer)
    }

    fn io_error(&self, source: std::io::Error) -> CliError {
        CliError::Io {
            path: self.name.clone(),
            source,
        }
    }

    /// Appends `rows` (`[k, dim]`); `indices[r]` is row `r`'s text index (JSON lines show it
    /// when the writer was created `with_index`).
    pub fn write_rows(&mut self, rows: &[f32], indices: &[usize]) -> Result<(), CliError> {
        if rows.len() != indices.len() * self.dim {
            return Err(CliError::Usage(format!(
                "{}: {} values for {} rows of {}",
                self.name,
                rows.len(),
                indices.len(),
                self.dim
            )));
        }
        self.rows_left = self
            .rows_left
            .checked_sub(indices.len())
            .ok_or_else(|| CliError::Usage(format!("{}: more rows than announced", self.name)))?;
        let result = match self.format {
            OutputFormat::Jsonl => write_json_lines(
                &mut self.out,
                rows,
                self.dim,
                self.with_index.then_some(indices),
            ),
            OutputFormat::Npy | OutputFormat::Raw => write_f32_le(&mut self.out, rows),
        };
        result.map_err(|e| self.io_error(e))
    }

    /// Flushes and, for a file, syncs it and moves it into place.
    pub fn finish(mut self) -> Result<(), CliError> {
        if self.rows_left != 0 {
            return Err(CliError::Usage(format!(
                "{}: {} rows were never written",
                self.name, self.rows_left
            )));
        }
        self.out.flush().map_err(|e| self.io_error(e))?;
        if let Some((temp, path)) = self.file.take() {
            let result = std::fs::File::open(&temp)
                .and_then(|f| f.sync_all())
                .and_then(|()| std::fs::rename(&temp, &path));
            if let Err(e) = result {
                let _ = std::fs::remove_file(&temp);
                return Err(self.io_error(e));
            }
        }
        Ok(())
    }
}

impl Drop for EmbeddingWriter {
    fn drop(&mut self) {
        if let Some((temp, _)) = self.file.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// Writes all of `embeddings` to `path` (stdout when `None`), in the format its name implies.
pub fn write_embeddings(embeddings: &Embeddings, path: Option<&Path>) -> Result<(), CliError> {
    let format = OutputFormat::from_path(path);
    let mut writer =
        EmbeddingWriter::create(path, format, false, embeddings.len(), embeddings.dim())?;
    let indices: Vec<usize> = (0..embeddings.len()).collect();
    writer.write_rows(embeddings.as_slice(), &indices)?;
    writer.finish()
}

fn write_json_lines(
    out: &mut impl Write,
    rows: &[f32],
    dim: usize,
    indices: Option<&[usize]>,
) -> std::io::Result<()> {
    for (r, row) in rows.chunks_exact(dim.max(1)).enumerate() {
        if let Some(indices) = indices {
            write!(out, "{{\"index\":{},\"embedding\":", indices[r])?;
        }
        serde_json::to_writer(&mut *out, row)?;
        if indices.is_some() {
            out.write_all(b"}")?;
        }
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn write_f32_le(out: &mut impl Write, rows: &[f32]) -> std::io::Result<()> {
    for &x in rows {
        out.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

/// NumPy format 1.0's preamble for float32 `[rows, dim]`: magic, header length, a Python-dict
/// header padded (with the final newline) to a multiple of 64 bytes.
fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    // A two-integer shape is far below format 1.0's 65535-byte header limit.
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
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

/// Reads a float32 `[rows, dim]` `.npy` as [`EmbeddingWriter`] writes it (format 1.0 or 2.0,
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
