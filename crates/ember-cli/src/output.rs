//! Writing embeddings, to stdout or atomically to a file, as rows become ready:
//!
//! - `jsonl`: one JSON array per text; with sharding, one object `{"index": j, "embedding":
//!   [...]}` per text, `j` its 0-based position in the whole input;
//! - `npy`: NumPy format 1.0, float32 `[n, dim]`, C order;
//! - `raw`: the same little-endian f32 values with no header (`n · dim · 4` bytes).
//!
//! A regular file (or a new path) is written under a temporary name beside it and renamed only
//! once complete, so a run that fails with an error leaves nothing behind; a run killed by a
//! signal can leave that hidden `.NAME.PID.partial` file (std has no signal handling to remove
//! it). A symlink to a file is followed, so the rename replaces its target and the link stays.
//! `/dev/stdout` and `/dev/stderr` (or `/dev/fd/1`, `/proc/self/fd/2`…) are the process's own
//! streams, written directly; anything else that exists and is not a regular file (a FIFO, a
//! terminal, `/dev/null`), and any other path under `/proc` or `/dev/fd`, is opened and written
//! in place, appending. Renaming over those would cut off their reader or replace a device
//! node; what a stream was sent before an error cannot be taken back.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ember::similarity::Similarity;
use ember::Embeddings;

use crate::CliError;

/// `--output-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON array per text (an object with "index" and "embedding" when sharded).
    Jsonl,
    /// NumPy .npy: float32 [n, dim], C order (int8 / uint8 [n, bytes] with --precision).
    Npy,
    /// Little-endian float32, row-major, no header: n * dim * 4 bytes (n * bytes with
    /// --precision).
    Raw,
}

/// What one value of a written row is: a float32, or a byte of a quantized row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Element {
    F32,
    I8,
    U8,
}

impl Element {
    /// NumPy's `descr` for it.
    fn descr(self) -> &'static str {
        match self {
            Element::F32 => "<f4",
            Element::I8 => "|i1",
            Element::U8 => "|u1",
        }
    }
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
    /// Values a row (bytes for a quantized one).
    dim: usize,
    element: Element,
    rows_left: usize,
    /// What errors call the output.
    name: String,
    /// A file output written by rename; the temporary file is removed on drop unless
    /// `finish` renamed it.
    file: Option<RenamedFile>,
    /// Whether the rows go to this process's standard error (`-o /dev/stderr`), where a
    /// progress bar would be drawn into them.
    to_stderr: bool,
}

/// `(temporary, final)` paths of a file output that is renamed into place once complete.
type RenamedFile = (PathBuf, PathBuf);

impl EmbeddingWriter {
    /// Whether the rows go to standard error (no progress bar may be drawn there).
    pub fn writes_to_stderr(&self) -> bool {
        self.to_stderr
    }

    /// Starts an output of `rows × dim` float32 values at `path` (stdout when `None`).
    pub fn create(
        path: Option<&Path>,
        format: OutputFormat,
        with_index: bool,
        rows: usize,
        dim: usize,
    ) -> Result<Self, CliError> {
        Self::create_of(path, format, with_index, rows, dim, Element::F32)
    }

    /// [`create`](Self::create) for rows of `dim` values of `element`.
    pub fn create_of(
        path: Option<&Path>,
        format: OutputFormat,
        with_index: bool,
        rows: usize,
        dim: usize,
        element: Element,
    ) -> Result<Self, CliError> {
        let (out, name, file, to_stderr): (Box<dyn Write>, _, _, _) = match path {
            None => (
                Box::new(std::io::stdout().lock()),
                "standard output".to_owned(),
                None,
                false,
            ),
            Some(path) => {
                let name = path.display().to_string();
                let target = output_target(path).map_err(|source| CliError::Io {
                    path: name.clone(),
                    source,
                })?;
                let to_stderr = target == OutputTarget::Stderr;
                let (out, temp_and_target) = open_output(path, target, &name)?;
                (out, name, temp_and_target, to_stderr)
            }
        };
        let mut writer = Self {
            out: BufWriter::with_capacity(1 << 16, out),
            format,
            with_index,
            dim,
            element,
            rows_left: rows,
            name,
            file,
            to_stderr,
        };
        if format == OutputFormat::Npy {
            let header = npy_header(rows, dim, element);
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
        self.check_rows(Element::F32, rows.len(), indices)?;
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

    /// Appends quantized rows (`[k, dim]` bytes; signed ones as two's complement), as
    /// [`write_rows`](Self::write_rows) does floats: JSON lines show the integers.
    pub fn write_byte_rows(&mut self, rows: &[u8], indices: &[usize]) -> Result<(), CliError> {
        let element = self.element;
        if element == Element::F32 {
            return Err(CliError::Usage(format!(
                "{}: bytes for float rows",
                self.name
            )));
        }
        self.check_rows(element, rows.len(), indices)?;
        let result = match self.format {
            OutputFormat::Jsonl => {
                let values = rows.chunks_exact(self.dim.max(1)).map(|row| -> Vec<i16> {
                    match element {
                        Element::I8 => row.iter().map(|&b| i16::from(b as i8)).collect(),
                        _ => row.iter().map(|&b| i16::from(b)).collect(),
                    }
                });
                write_json_rows(&mut self.out, values, self.with_index.then_some(indices))
            }
            OutputFormat::Npy | OutputFormat::Raw => self.out.write_all(rows),
        };
        result.map_err(|e| self.io_error(e))
    }

    /// Checks that `values` of `element` are `indices.len()` whole rows, and counts them.
    fn check_rows(
        &mut self,
        element: Element,
        values: usize,
        indices: &[usize],
    ) -> Result<(), CliError> {
        if element != self.element || values != indices.len() * self.dim {
            return Err(CliError::Usage(format!(
                "{}: {values} values ({element:?}) for {} rows of {} ({:?})",
                self.name,
                indices.len(),
                self.dim,
                self.element
            )));
        }
        self.rows_left = self
            .rows_left
            .checked_sub(indices.len())
            .ok_or_else(|| CliError::Usage(format!("{}: more rows than announced", self.name)))?;
        Ok(())
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

/// Opens what `--output path` is written through, as `target` ([`output_target`]) says, and
/// for a regular file (or a new path) the `(temporary, final)` pair that
/// [`EmbeddingWriter::finish`] renames; `name` is what errors call the output.
fn open_output(
    path: &Path,
    target: OutputTarget,
    name: &str,
) -> Result<(Box<dyn Write>, Option<RenamedFile>), CliError> {
    let io_error = |source| CliError::Io {
        path: name.to_owned(),
        source,
    };
    let target = match target {
        // The descriptor itself, not a reopening of it: that shares the caller's offset (so
        // `{ echo a; ember -o /dev/stdout …; echo b; } > f` keeps all three in order) and
        // works where reopening cannot (a socket).
        OutputTarget::Stdout => return Ok((Box::new(std::io::stdout().lock()), None)),
        // Not locked for the whole run: a worker thread's warning (ember-cpu's EMBER_ISA
        // notice) would wait for the lock while this thread waits for the worker.
        OutputTarget::Stderr => return Ok((Box::new(std::io::stderr()), None)),
        OutputTarget::InPlace => {
            // Append: another descriptor's file (`/proc/self/fd/3`) then continues where its
            // holder wrote up to, not at 0. A FIFO or device ignores it.
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(io_error)?;
            return Ok((Box::new(file), None));
        }
        OutputTarget::Replace(target) => target,
    };
    let (file, temp) = create_temp_beside(&target, &format!("--output {name}"))?;
    Ok((Box::new(file), Some((temp, target))))
}

/// A new file beside `target` (`.NAME.PID.NANOS.N.partial`), to be renamed over it once
/// complete: a name no other run shares, created only if absent (never truncating or
/// following another's). Two runs with one PID (containers' PID 1, a shard rerun while the
/// first still stops) writing the same path would otherwise empty each other's file, and the
/// first to finish would rename a half-written one into place.
/// `what` names the target in errors.
fn create_temp_beside(target: &Path, what: &str) -> Result<(std::fs::File, PathBuf), CliError> {
    let file_name = target
        .file_name()
        .ok_or_else(|| CliError::Usage(format!("{what} is not a file name")))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut attempt = 0u32;
    loop {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(
            ".{}.{nanos:08x}.{attempt}.partial",
            std::process::id()
        ));
        let temp = target.with_file_name(temp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1
            }
            Err(source) => {
                return Err(CliError::Io {
                    path: target.display().to_string(),
                    source,
                })
            }
        }
    }
}

/// How an `--output` path is written.
#[derive(Debug, PartialEq, Eq)]
enum OutputTarget {
    /// To this process's standard output: `/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1`.
    Stdout,
    /// To this process's standard error: `/dev/stderr`, `/dev/fd/2`, `/proc/self/fd/2`.
    Stderr,
    /// Through the path as it is: a FIFO or device (a rename over it would cut off its
    /// reader, or replace `/dev/null` for everyone), or a file under `/proc` or `/dev/fd`
    /// (another open descriptor, which its holder keeps using by that name). A socket or a
    /// directory is refused by the open, before any embedding.
    InPlace,
    /// Under a temporary name beside this regular file, or path to create, then renamed
    /// over it: the output path with the symlinks of its last component followed, so a link
    /// to a file keeps being a link.
    Replace(PathBuf),
}

/// Decides how `path` is written (see [`OutputTarget`]).
fn output_target(path: &Path) -> std::io::Result<OutputTarget> {
    // Linux's own limit on links followed in one lookup (MAXSYMLINKS).
    const MAX_LINKS: usize = 40;
    // Follow the links of the last component by hand, as `open` would: unlike `canonicalize`
    // this also follows a dangling link to the file it names, and it sees `/dev/stdout` on
    // the way to `/proc/self/fd/1`, whose own target is only a name (`pipe:[1234]`).
    let mut resolved = path.to_owned();
    let mut links = 0;
    loop {
        if let Some(target) = descriptor_target(&resolved) {
            return target;
        }
        match std::fs::symlink_metadata(&resolved) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(std::io::Error::other(format!(
                        "more than {MAX_LINKS} symbolic links to follow"
                    )));
                }
                let link = std::fs::read_link(&resolved)?;
                // A relative target is relative to the link's directory; `join` keeps an
                // absolute one as it is.
                resolved = match resolved.parent() {
                    Some(dir) => dir.join(link),
                    None => link,
                };
            }
            // Not a link, or not there (a missing directory is reported by the create).
            _ => break,
        }
    }
    // The type from the kernel, which follows every link (a directory link into `/proc`
    // included). A directory is "written in place" too: opening it fails before any
    // embedding is done.
    match std::fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => Ok(OutputTarget::InPlace),
        Ok(_) => Ok(OutputTarget::Replace(resolved)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OutputTarget::Replace(resolved)),
        Err(e) => Err(e),
    }
}

/// How `path` is written when it names one of the process's file descriptors rather than a
/// file in a directory; `None` when it does not.
fn descriptor_target(path: &Path) -> Option<std::io::Result<OutputTarget>> {
    // `-o -`: standard output, as `-i -` is standard input.
    if path == Path::new("-") {
        return Some(Ok(OutputTarget::Stdout));
    }
    let named = |names: [&str; 3]| names.iter().any(|name| path == Path::new(name));
    // The input's descriptor (`< texts.txt`): appending the rows to it would write into the
    // texts' file.
    if named(["/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"]) {
        return Some(Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "standard input is not an output",
        )));
    }
    let target = if named(["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"]) {
        OutputTarget::Stdout
    } else if named(["/dev/stderr", "/dev/fd/2", "/proc/self/fd/2"]) {
        OutputTarget::Stderr
    } else if path.starts_with("/proc") || path.starts_with("/dev/fd") {
        OutputTarget::InPlace
    } else {
        return None;
    };
    Some(Ok(target))
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

/// Writes `value` as pretty JSON to `path`, whole or not at all (a temporary file beside it,
/// then a rename).
pub fn write_json_file(path: &Path, value: &serde_json::Value) -> Result<(), CliError> {
    let name = path.display().to_string();
    let io_error = |source| CliError::Io {
        path: name.clone(),
        source,
    };
    let (mut file, temp) = create_temp_beside(path, &name)?;
    let written = serde_json::to_vec_pretty(value)
        .map_err(std::io::Error::from)
        .and_then(|bytes| file.write_all(&bytes))
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(io_error)
}

fn write_json_lines(
    out: &mut impl Write,
    rows: &[f32],
    dim: usize,
    indices: Option<&[usize]>,
) -> std::io::Result<()> {
    write_json_rows(out, rows.chunks_exact(dim.max(1)), indices)
}

/// One JSON line per row (`{"index": i, "embedding": row}` when `indices` is given).
fn write_json_rows<R: serde::Serialize>(
    out: &mut impl Write,
    rows: impl Iterator<Item = R>,
    indices: Option<&[usize]>,
) -> std::io::Result<()> {
    for (r, row) in rows.enumerate() {
        if let Some(indices) = indices {
            write!(out, "{{\"index\":{},\"embedding\":", indices[r])?;
        }
        serde_json::to_writer(&mut *out, &row)?;
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

/// NumPy format 1.0's preamble for `[rows, dim]` of `element`: magic, header length, a
/// Python-dict header padded (with the final newline) to a multiple of 64 bytes.
fn npy_header(rows: usize, dim: usize, element: Element) -> Vec<u8> {
    let descr = element.descr();
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    // A two-integer shape is far below format 1.0's 65535-byte header limit.
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// A readable matrix of `texts`' similarities by `similarity` (the model's
/// `similarity_fn_name`; distances negated, as sentence-transformers' `model.similarity` gives
/// them).
pub fn write_similarity(
    out: &mut impl Write,
    texts: &[String],
    embeddings: &Embeddings,
    similarity: Similarity,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} similarity ({} texts, dim {}):",
        similarity.name(),
        texts.len(),
        embeddings.dim()
    )?;
    for (i, text) in texts.iter().enumerate() {
        let shown: String = text.chars().take(48).collect();
        let ellipsis = if text.chars().count() > 48 { "…" } else { "" };
        writeln!(out, "  [{i}] {shown}{ellipsis}")?;
    }
    let cells: Vec<String> = (0..texts.len() * texts.len())
        .map(|c| {
            let (i, j) = (c / texts.len(), c % texts.len());
            // + 0.0: a distance's negated zero prints as 0.000.
            format!(
                "{:.3}",
                similarity.score(embeddings.row(i), embeddings.row(j)) + 0.0
            )
        })
        .collect();
    // Dot products and distances of unnormalised rows can be wider than cosine's "-0.123".
    let width = cells.iter().map(String::len).max().unwrap_or(0).max(6);
    write!(out, "\n     ")?;
    for j in 0..texts.len() {
        write!(out, " {:>width$}", format!("[{j}]"))?;
    }
    writeln!(out)?;
    for (i, row) in cells.chunks(texts.len().max(1)).enumerate() {
        write!(out, "  {:<3}", format!("[{i}]"))?;
        for cell in row {
            write!(out, " {cell:>width$}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Parses `bytes`, read from `path` (which names them in errors), as a float32 `[rows, dim]`
/// `.npy` as [`EmbeddingWriter`] writes it (format 1.0 or 2.0, `'<f4'`, C order). Anything
/// else is an error naming the file and what is wrong.
pub fn parse_npy(path: &Path, bytes: &[u8]) -> Result<Embeddings, CliError> {
    let name = path.display().to_string();
    let bad = |message: &str| {
        CliError::Usage(format!("{name}: not a float32 [rows, dim] .npy: {message}"))
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    // Only decides; nothing is opened, so device nodes are safe to name even as root.
    #[cfg(target_os = "linux")]
    #[test]
    fn devices_and_standard_streams_are_written_in_place() {
        let cases = [
            ("/dev/null", OutputTarget::InPlace),
            ("/proc/self/fd/3", OutputTarget::InPlace),
            ("/dev/stdout", OutputTarget::Stdout),
            ("/dev/fd/1", OutputTarget::Stdout),
            ("/proc/self/fd/1", OutputTarget::Stdout),
            ("/dev/stderr", OutputTarget::Stderr),
            ("/proc/self/fd/2", OutputTarget::Stderr),
        ];
        for (path, expected) in cases {
            assert_eq!(output_target(Path::new(path)).unwrap(), expected, "{path}");
        }
        // Standard input is not an output, by any of its names.
        for stdin in ["/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"] {
            let err = output_target(Path::new(stdin)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{stdin}");
        }
        // A link of one's own to standard output is followed to it.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("out.jsonl");
        std::os::unix::fs::symlink("/dev/stdout", &link).unwrap();
        assert_eq!(output_target(&link).unwrap(), OutputTarget::Stdout);
    }

    #[cfg(unix)]
    #[test]
    fn regular_files_and_new_paths_are_replaced_through_their_links() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.npy");
        std::fs::write(&file, b"old").unwrap();
        let new = dir.path().join("new.npy");
        assert_eq!(
            output_target(&file).unwrap(),
            OutputTarget::Replace(file.clone())
        );
        assert_eq!(
            output_target(&new).unwrap(),
            OutputTarget::Replace(new.clone())
        );
        // link → link → file, and a relative dangling link.
        let first = dir.path().join("first");
        let second = dir.path().join("second");
        std::os::unix::fs::symlink(&file, &second).unwrap();
        std::os::unix::fs::symlink("second", &first).unwrap();
        assert_eq!(
            output_target(&first).unwrap(),
            OutputTarget::Replace(file.clone())
        );
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("new.npy", &dangling).unwrap();
        assert_eq!(
            output_target(&dangling).unwrap(),
            OutputTarget::Replace(new)
        );
        // A loop is an error, not a hang.
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::os::unix::fs::symlink("b", &a).unwrap();
        std::os::unix::fs::symlink("a", &b).unwrap();
        assert!(output_target(&a).is_err());
    }
}
