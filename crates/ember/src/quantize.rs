//! Embeddings stored at lower precision, as sentence-transformers'
//! `quantize_embeddings(embeddings, precision)` (and `encode(…, precision=…)`) gives them:
//! `int8` / `uint8` (one byte a value, on per-dimension ranges) and `binary` / `ubinary` (one
//! bit a value, 8 a byte), for vector stores that keep 4× or 32× fewer bytes.
//!
//! - `uint8`: with `starts = min`, `steps = (max − min) / 255` per dimension (a step of 0
//!   becomes 1), `clip(floor((x − starts) / steps), 0, 255)`; `int8` is that less 128. All in
//!   f32, as NumPy computes it, so the bytes are sentence-transformers' for the same floats.
//!   The ranges are the per-dimension minimum and maximum of calibration embeddings
//!   ([`QuantizationRanges::from_embeddings`]): sentence-transformers takes those of the
//!   embeddings being quantized when it is given none (`encode(…, precision="int8")`), which
//!   needs at least two rows.
//! - `ubinary`: `numpy.packbits(x > 0)`: bit 7 of byte 0 is value 0, … ; a last byte's unused
//!   bits are 0; `binary` is that byte less 128, as an `i8`.
//!
//! ```
//! use ember::quantize::{quantize, Quantization, QuantizationRanges};
//! use ember::Embeddings;
//!
//! let rows = Embeddings::from_vec(vec![0.5, -1.0, 0.25, 1.0, 0.0, -0.5], 2, 3)?;
//! let bits = quantize(&rows, Quantization::Ubinary, None)?;
//! assert_eq!(bits.row(0), [0b1010_0000]); // 0.5 > 0, -1.0 ≤ 0, 0.25 > 0
//! let ranges = QuantizationRanges::from_embeddings(&rows)?;
//! let bytes = quantize(&rows, Quantization::Uint8, Some(&ranges))?;
//! // The maximum lands in bucket 254 (f32 rounding), as in sentence-transformers.
//! assert_eq!(bytes.row(0), [0, 0, 255]);
//! assert_eq!(bytes.row(1), [254, 254, 0]);
//! # Ok::<(), ember::EmberError>(())
//! ```

use crate::{Embeddings, EmberError};

/// A lower precision for stored embeddings (sentence-transformers' `precision` values other
/// than `float32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quantization {
    /// One signed byte a value: `uint8`'s less 128.
    Int8,
    /// One byte a value, on per-dimension ranges.
    Uint8,
    /// `ubinary`'s bytes less 128, as signed bytes.
    Binary,
    /// One bit a value (`x > 0`), packed 8 a byte, most significant bit first.
    Ubinary,
}

impl Quantization {
    /// Every quantization, in sentence-transformers' order.
    pub const ALL: [Quantization; 4] = [
        Quantization::Int8,
        Quantization::Uint8,
        Quantization::Binary,
        Quantization::Ubinary,
    ];

    /// The quantization sentence-transformers calls `name` (`int8`, `uint8`, `binary`,
    /// `ubinary`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.name() == name)
    }

    /// Its sentence-transformers name.
    pub fn name(self) -> &'static str {
        match self {
            Quantization::Int8 => "int8",
            Quantization::Uint8 => "uint8",
            Quantization::Binary => "binary",
            Quantization::Ubinary => "ubinary",
        }
    }

    /// Whether its bytes are signed (`int8`, `binary`).
    pub fn is_signed(self) -> bool {
        matches!(self, Quantization::Int8 | Quantization::Binary)
    }

    /// Whether it needs [`QuantizationRanges`] (`int8`, `uint8`).
    pub fn needs_ranges(self) -> bool {
        matches!(self, Quantization::Int8 | Quantization::Uint8)
    }

    /// Bytes of one quantized row of `dim` values.
    pub fn row_bytes(self, dim: usize) -> usize {
        match self {
            Quantization::Int8 | Quantization::Uint8 => dim,
            Quantization::Binary | Quantization::Ubinary => dim.div_ceil(8),
        }
    }
}

/// Per-dimension `[min, max]` for `int8` / `uint8` (sentence-transformers' `ranges`, a
/// `[2, dim]` array: row 0 the minima, row 1 the maxima).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizationRanges {
    min: Vec<f32>,
    max: Vec<f32>,
}

impl QuantizationRanges {
    /// The per-dimension minimum and maximum of `calibration` (at least two rows, as
    /// sentence-transformers requires; a NaN or infinite value is an error).
    pub fn from_embeddings(calibration: &Embeddings) -> Result<Self, EmberError> {
        if calibration.len() < 2 {
            return Err(EmberError::Options(format!(
                "quantization ranges need at least 2 calibration embeddings, got {}",
                calibration.len()
            )));
        }
        let dim = calibration.dim();
        let (mut min, mut max) = (calibration.row(0).to_vec(), calibration.row(0).to_vec());
        for row in calibration.rows() {
            for (j, &x) in row.iter().enumerate() {
                if !x.is_finite() {
                    return Err(EmberError::Options(format!(
                        "quantization ranges: calibration value {j} of a row is {x}"
                    )));
                }
                min[j] = min[j].min(x);
                max[j] = max[j].max(x);
            }
        }
        debug_assert_eq!(min.len(), dim);
        Ok(Self { min, max })
    }

    /// Ranges given as per-dimension minima and maxima (sentence-transformers' `ranges[0]` and
    /// `ranges[1]`): the same length, finite values.
    pub fn new(min: Vec<f32>, max: Vec<f32>) -> Result<Self, EmberError> {
        if min.len() != max.len() || min.is_empty() {
            return Err(EmberError::Options(format!(
                "quantization ranges: {} minima and {} maxima (expected as many, at least one)",
                min.len(),
                max.len()
            )));
        }
        if let Some(j) = (0..min.len()).find(|&j| !min[j].is_finite() || !max[j].is_finite()) {
            return Err(EmberError::Options(format!(
                "quantization ranges: dimension {j} is not finite ({}, {})",
                min[j], max[j]
            )));
        }
        Ok(Self { min, max })
    }

    /// The width they are for.
    pub fn dim(&self) -> usize {
        self.min.len()
    }

    /// The per-dimension minima.
    pub fn min(&self) -> &[f32] {
        &self.min
    }

    /// The per-dimension maxima.
    pub fn max(&self) -> &[f32] {
        &self.max
    }
}

/// Quantized embeddings: `len` rows of [`Quantization::row_bytes`] bytes each, in input order.
/// Signed quantizations keep their `i8` values' two's-complement bytes ([`row_i8`](Self::row_i8)
/// reads them back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantizedEmbeddings {
    quantization: Quantization,
    dim: usize,
    row_bytes: usize,
    data: Vec<u8>,
}

impl QuantizedEmbeddings {
    /// The quantization.
    pub fn quantization(&self) -> Quantization {
        self.quantization
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.row_bytes).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Values a row stands for (the embeddings' width).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes a row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Row `i`'s bytes.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.data[i * self.row_bytes..(i + 1) * self.row_bytes]
    }

    /// Row `i` as signed bytes (for `int8` and `binary`, their values).
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn row_i8(&self, i: usize) -> Vec<i8> {
        self.row(i).iter().map(|&b| b as i8).collect()
    }

    /// All rows' bytes, row after row.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }
}

/// `embeddings` at `quantization`; `ranges` are required for `int8` / `uint8` (see
/// [`QuantizationRanges::from_embeddings`] for sentence-transformers' default, the
/// embeddings' own) and ignored for the binary ones.
pub fn quantize(
    embeddings: &Embeddings,
    quantization: Quantization,
    ranges: Option<&QuantizationRanges>,
) -> Result<QuantizedEmbeddings, EmberError> {
    let dim = embeddings.dim();
    let row_bytes = quantization.row_bytes(dim);
    let mut data = vec![0u8; embeddings.len() * row_bytes];
    quantize_into(embeddings.as_slice(), dim, quantization, ranges, &mut data)?;
    Ok(QuantizedEmbeddings {
        quantization,
        dim,
        row_bytes,
        data,
    })
}

/// [`quantize`] of `rows` (`[n, dim]` floats) into `out` (`n` rows of
/// [`Quantization::row_bytes`] bytes), allocating nothing.
pub fn quantize_into(
    rows: &[f32],
    dim: usize,
    quantization: Quantization,
    ranges: Option<&QuantizationRanges>,
    out: &mut [u8],
) -> Result<(), EmberError> {
    let row_bytes = quantization.row_bytes(dim);
    let n = rows.len().checked_div(dim).unwrap_or(0);
    if dim == 0 || rows.len() != n * dim || out.len() != n * row_bytes {
        return Err(EmberError::Options(format!(
            "quantize: {} values of width {dim} into {} bytes ({} a row)",
            rows.len(),
            out.len(),
            row_bytes
        )));
    }
    if n == 0 {
        return Ok(()); // nothing to quantize, as sentence-transformers returns an empty array
    }
    match quantization {
        Quantization::Int8 | Quantization::Uint8 => {
            let ranges = ranges.ok_or_else(|| {
                EmberError::Options(format!(
                    "{} quantization needs ranges (the per-dimension min and max of \
                     calibration embeddings)",
                    quantization.name()
                ))
            })?;
            if ranges.dim() != dim {
                return Err(EmberError::Options(format!(
                    "quantization ranges are for {} dimensions, the embeddings have {dim}",
                    ranges.dim()
                )));
            }
            let signed = quantization == Quantization::Int8;
            for (row, out_row) in rows.chunks_exact(dim).zip(out.chunks_exact_mut(row_bytes)) {
                for (j, (&x, o)) in row.iter().zip(out_row.iter_mut()).enumerate() {
                    *o = match (bucket(x, ranges.min[j], ranges.max[j]), signed) {
                        // NumPy casts a NaN bucket to 0, for int8 as for uint8.
                        (None, _) => 0,
                        (Some(q), false) => q,
                        (Some(q), true) => q.wrapping_sub(128),
                    };
                }
            }
        }
        Quantization::Binary | Quantization::Ubinary => {
            let flip = if quantization == Quantization::Binary {
                0x80
            } else {
                0
            };
            for (row, out_row) in rows.chunks_exact(dim).zip(out.chunks_exact_mut(row_bytes)) {
                for (bits, byte) in row.chunks(8).zip(out_row.iter_mut()) {
                    let packed = bits
                        .iter()
                        .enumerate()
                        .fold(0u8, |b, (k, &x)| b | (u8::from(x > 0.0) << (7 - k)));
                    // (b − 128) as i8 is b with its top bit flipped.
                    *byte = packed ^ flip;
                }
            }
        }
    }
    Ok(())
}

/// `clip(floor((x − start) / step), 0, 255)` with `step = (end − start) / 255` (1 when 0), in
/// f32 as NumPy does it; `None` for NaN (a NaN value).
fn bucket(x: f32, start: f32, end: f32) -> Option<u8> {
    let mut step = (end - start) / 255.0;
    if step == 0.0 {
        step = 1.0;
    }
    let q = ((x - start) / step).floor();
    // `as u8` saturates: the clip.
    (!q.is_nan()).then_some(q.clamp(0.0, 255.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for q in Quantization::ALL {
            assert_eq!(Quantization::from_name(q.name()), Some(q));
        }
        assert_eq!(Quantization::from_name("float32"), None);
    }

    #[test]
    fn binary_packs_most_significant_bit_first_and_pads_with_zeros() {
        // Ten values: two bytes, the second's last 6 bits unused.
        let row = [1.0, -1.0, 0.0, 2.0, 3.0, -0.0, 1e-30, -5.0, 0.5, 0.5];
        let rows = Embeddings::from_vec(row.to_vec(), 1, 10).unwrap();
        let u = quantize(&rows, Quantization::Ubinary, None).unwrap();
        // NumPy: [[154 192]] and [[26 64]].
        assert_eq!(u.row(0), [0b1001_1010, 0b1100_0000]);
        let b = quantize(&rows, Quantization::Binary, None).unwrap();
        assert_eq!(b.row_i8(0), [26, 64]);
    }

    #[test]
    fn scalar_buckets_follow_numpy() {
        // Dimension 0 spans [-1, 1] (step 2/255), dimension 1 is constant (step 1).
        let rows = Embeddings::from_vec(vec![-1.0, 3.0, 1.0, 3.0, 0.0, 3.0], 3, 2).unwrap();
        let ranges = QuantizationRanges::from_embeddings(&rows).unwrap();
        assert_eq!(
            (ranges.min(), ranges.max()),
            (&[-1.0, 3.0][..], &[1.0, 3.0][..])
        );
        let u = quantize(&rows, Quantization::Uint8, Some(&ranges)).unwrap();
        // NumPy's bytes (sentence-transformers 6.2's quantize_embeddings on these rows): the
        // maximum lands in 254 (2 / (2/255) rounds below 255 in f32), 0 in floor(127.5) = 127,
        // the constant dimension in floor(0 / 1) = 0.
        assert_eq!(u.as_bytes(), [0, 0, 254, 0, 127, 0]);
        let i = quantize(&rows, Quantization::Int8, Some(&ranges)).unwrap();
        assert_eq!(i.row_i8(0), [-128, -128]);
        assert_eq!(i.row_i8(1), [126, -128]);
        assert_eq!(i.row_i8(2), [-1, -128]);
        // Values outside the ranges are clipped.
        let outside = Embeddings::from_vec(vec![-9.0, 9.0], 1, 2).unwrap();
        let q = quantize(&outside, Quantization::Uint8, Some(&ranges)).unwrap();
        assert_eq!(q.row(0), [0, 6]);
    }

    #[test]
    fn nan_and_empty_follow_numpy() {
        let ranges = QuantizationRanges::new(vec![0.0, 0.0], vec![1.0, 1.0]).unwrap();
        let rows = Embeddings::from_vec(vec![f32::NAN, 0.5], 1, 2).unwrap();
        // NumPy: (nan - 128).astype(int8) and nan.astype(uint8) are both 0.
        for q in [Quantization::Int8, Quantization::Uint8] {
            assert_eq!(
                quantize(&rows, q, Some(&ranges)).unwrap().row(0)[0],
                0,
                "{q:?}"
            );
        }
        let none = Embeddings::from_vec(Vec::new(), 0, 2).unwrap();
        for q in Quantization::ALL {
            assert!(quantize(&none, q, None).unwrap().is_empty());
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let one = Embeddings::from_vec(vec![1.0, 2.0], 1, 2).unwrap();
        assert!(QuantizationRanges::from_embeddings(&one).is_err());
        assert!(quantize(&one, Quantization::Int8, None).is_err());
        let ranges = QuantizationRanges::new(vec![0.0], vec![1.0]).unwrap();
        assert!(quantize(&one, Quantization::Uint8, Some(&ranges)).is_err());
        assert!(QuantizationRanges::new(vec![0.0], vec![f32::NAN]).is_err());
        assert!(QuantizationRanges::new(vec![0.0, 1.0], vec![1.0]).is_err());
        let mut out = [0u8; 1];
        assert!(quantize_into(&[1.0, 2.0], 2, Quantization::Binary, None, &mut out).is_ok());
        assert!(quantize_into(&[1.0, 2.0], 2, Quantization::Uint8, None, &mut out).is_err());
        assert!(quantize_into(&[1.0, 2.0, 3.0], 2, Quantization::Binary, None, &mut out).is_err());
    }
}
