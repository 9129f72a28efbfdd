//! A reader for the zip archives `torch.save` writes: the central directory only, STORED
//! (uncompressed) entries only, zip64 records understood.
//!
//! `torch.save` (PyTorch ≥ 1.6) writes its archive with miniz, every entry STORED and its data
//! padded so that it starts at a multiple of 64 bytes, and always appends zip64 end records. So
//! an entry's data is a plain byte range of the file, which the caller can use in place from a
//! memory map; nothing is decompressed and nothing is copied here.
//!
//! Layout read (APPNOTE.TXT, <https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT>):
//!
//! ```text
//! [local header 30 B + name + extra][data] …  [central header 46 B + name + extra + comment] …
//! [zip64 end record 56 B]? [zip64 locator 20 B]? [end of central directory 22 B + comment]
//! ```
//!
//! Every field is bounds-checked against the file: the central directory must lie before the end
//! record, each central header must agree with its local header on the name, each entry's data
//! must end before the central directory starts, and counts are checked against the bytes that
//! could hold them before anything is allocated. Multi-disk archives, encryption and compression
//! are refused. CRCs are not checked here (a 1 GB checkpoint would be read in full); [`crc32`]
//! lets the caller check the small entries it parses.

use std::collections::BTreeMap;
use std::ops::Range;

/// Why a zip archive was refused: what is wrong, and at which byte offset of the file.
#[derive(Debug)]
pub(crate) struct ZipError {
    pub offset: u64,
    pub reason: String,
}

const EOCD_SIGNATURE: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIGNATURE: u32 = 0x0706_4b50;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_SIGNATURE: u32 = 0x0606_4b50;
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_SIGNATURE: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
const LOCAL_SIGNATURE: u32 = 0x0403_4b50;
const LOCAL_LEN: usize = 30;
/// Extra-field tag of the zip64 extended information.
const ZIP64_EXTRA_TAG: u16 = 0x0001;
/// The longest comment an end record can carry, hence how far from the end to look for it.
const MAX_COMMENT_LEN: usize = u16::MAX as usize;

/// The entries of an archive: name → byte range of the entry's data in the file.
#[derive(Debug)]
pub(crate) struct ZipArchive {
    entries: BTreeMap<String, ZipEntry>,
}

/// One STORED entry.
#[derive(Debug, Clone)]
pub(crate) struct ZipEntry {
    /// Absolute byte range of the data in the file.
    pub data: Range<usize>,
    /// CRC-32 the central directory records for the data.
    pub crc32: u32,
}

impl ZipArchive {
    /// Reads the central directory of `bytes` (the whole file).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, ZipError> {
        let end = find_end_record(bytes)?;
        let (count, cd_range) = central_directory_range(bytes, end)?;
        let mut entries = BTreeMap::new();
        let mut pos = cd_range.start;
        for index in 0..count {
            let (name, entry, next) = read_central_entry(bytes, pos, index, cd_range.start)?;
            if entries.insert(name.clone(), entry).is_some() {
                return Err(err(pos, format!("entry \"{name}\" appears twice")));
            }
            pos = next;
            if pos > cd_range.end {
                return Err(err(
                    pos,
                    format!(
                        "central directory entry {index} runs past the directory's declared end {}",
                        cd_range.end
                    ),
                ));
            }
        }
        Ok(Self { entries })
    }

    /// The entry called `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<&ZipEntry> {
        self.entries.get(name)
    }

    /// Entry names, sorted.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.keys().map(String::as_str)
    }
}

fn err(offset: usize, reason: String) -> ZipError {
    ZipError {
        offset: offset as u64,
        reason,
    }
}

/// `N` bytes at `pos`, or `None` past the end.
fn array<const N: usize>(bytes: &[u8], pos: usize) -> Option<[u8; N]> {
    bytes.get(pos..pos.checked_add(N)?)?.try_into().ok()
}

fn u16_at(bytes: &[u8], pos: usize) -> Option<u16> {
    array(bytes, pos).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], pos: usize) -> Option<u32> {
    array(bytes, pos).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], pos: usize) -> Option<u64> {
    array(bytes, pos).map(u64::from_le_bytes)
}

/// A field read from a structure whose whole length was already checked to be in bounds; a
/// `None` here would be an internal inconsistency, still reported as an error.
fn field<T>(value: Option<T>, pos: usize) -> Result<T, ZipError> {
    value.ok_or_else(|| err(pos, "record runs past the end of the file".to_owned()))
}

/// The offset of the end-of-central-directory record: the last signature whose comment length
/// ends exactly at the end of the file.
fn find_end_record(bytes: &[u8]) -> Result<usize, ZipError> {
    if bytes.len() < EOCD_LEN {
        return Err(err(
            0,
            format!(
                "{} bytes is too short for a zip archive (its end record alone is {EOCD_LEN})",
                bytes.len()
            ),
        ));
    }
    let last = bytes.len() - EOCD_LEN;
    let first = last.saturating_sub(MAX_COMMENT_LEN);
    (first..=last)
        .rev()
        .find(|&pos| {
            u32_at(bytes, pos) == Some(EOCD_SIGNATURE)
                && u16_at(bytes, pos + 20).map(usize::from) == Some(bytes.len() - pos - EOCD_LEN)
        })
        .ok_or_else(|| {
            err(
                last,
                "no end-of-central-directory record: not a zip archive, or truncated".to_owned(),
            )
        })
}

/// The number of entries and the byte range of the central directory, from the end record or,
/// when present, the zip64 end record it points to.
fn central_directory_range(bytes: &[u8], end: usize) -> Result<(usize, Range<usize>), ZipError> {
    let disk = field(u16_at(bytes, end + 4), end)?;
    let cd_disk = field(u16_at(bytes, end + 6), end)?;
    let entries_here = field(u16_at(bytes, end + 8), end)?;
    let entries_total = field(u16_at(bytes, end + 10), end)?;
    if disk != 0 || cd_disk != 0 || entries_here != entries_total {
        return Err(err(
            end,
            "multi-disk zip archives are not supported".to_owned(),
        ));
    }
    let mut count = u64::from(entries_total);
    let mut cd_size = u64::from(field(u32_at(bytes, end + 12), end)?);
    let mut cd_offset = u64::from(field(u32_at(bytes, end + 16), end)?);
    // The directory (or the zip64 records) must end where the next record starts.
    let mut cd_limit = end;

    let has_locator = end >= ZIP64_LOCATOR_LEN
        && u32_at(bytes, end - ZIP64_LOCATOR_LEN) == Some(ZIP64_LOCATOR_SIGNATURE);
    if has_locator {
        let locator = end - ZIP64_LOCATOR_LEN;
        let record = field(u64_at(bytes, locator + 8), locator)?;
        let record = usize::try_from(record)
            .ok()
            .filter(|&r| r.checked_add(ZIP64_EOCD_LEN).is_some_and(|e| e <= locator))
            .ok_or_else(|| {
                err(
                    locator,
                    format!("zip64 locator points to {record}, not before the locator"),
                )
            })?;
        if u32_at(bytes, record) != Some(ZIP64_EOCD_SIGNATURE) {
            return Err(err(
                record,
                "zip64 locator does not point to a zip64 end record".to_owned(),
            ));
        }
        count = field(u64_at(bytes, record + 32), record)?;
        cd_size = field(u64_at(bytes, record + 40), record)?;
        cd_offset = field(u64_at(bytes, record + 48), record)?;
        cd_limit = record;
    }

    let cd_start = usize::try_from(cd_offset).ok();
    let cd_end = cd_start
        .zip(usize::try_from(cd_size).ok())
        .and_then(|(s, n)| s.checked_add(n));
    let (Some(cd_start), Some(cd_end)) = (cd_start, cd_end) else {
        return Err(err(
            end,
            format!("central directory at {cd_offset} of {cd_size} bytes does not fit"),
        ));
    };
    if cd_end > cd_limit {
        return Err(err(
            end,
            format!(
                "central directory [{cd_start}, {cd_end}) runs past the end records at {cd_limit}"
            ),
        ));
    }
    // Each entry takes at least CENTRAL_LEN bytes: a larger count is a lie, refused before any
    // allocation is sized by it.
    let max_count = (cd_end - cd_start) / CENTRAL_LEN;
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c <= max_count)
        .ok_or_else(|| {
            err(
                end,
                format!(
                    "{count} entries cannot fit in a {}-byte central directory",
                    cd_end - cd_start
                ),
            )
        })?;
    Ok((count, cd_start..cd_end))
}

/// Parses the central header at `pos` and checks the local header it points to; returns the
/// entry's name, its data range and the offset of the next central header. Data must end by
/// `data_limit` (the start of the central directory).
fn read_central_entry(
    bytes: &[u8],
    pos: usize,
    index: usize,
    data_limit: usize,
) -> Result<(String, ZipEntry, usize), ZipError> {
    if u32_at(bytes, pos) != Some(CENTRAL_SIGNATURE) {
        return Err(err(
            pos,
            format!("central directory entry {index}: bad signature"),
        ));
    }
    let flags = field(u16_at(bytes, pos + 8), pos)?;
    let method = field(u16_at(bytes, pos + 10), pos)?;
    let crc32 = field(u32_at(bytes, pos + 16), pos)?;
    let mut compressed = u64::from(field(u32_at(bytes, pos + 20), pos)?);
    let mut size = u64::from(field(u32_at(bytes, pos + 24), pos)?);
    let name_len = usize::from(field(u16_at(bytes, pos + 28), pos)?);
    let extra_len = usize::from(field(u16_at(bytes, pos + 30), pos)?);
    let comment_len = usize::from(field(u16_at(bytes, pos + 32), pos)?);
    let mut local = u64::from(field(u32_at(bytes, pos + 42), pos)?);

    let name_start = pos + CENTRAL_LEN;
    let extra_start = name_start + name_len;
    let next = extra_start + extra_len + comment_len;
    let name_bytes = bytes.get(name_start..extra_start).ok_or_else(|| {
        err(
            pos,
            format!("central directory entry {index} runs past the end of the file"),
        )
    })?;
    let name = std::str::from_utf8(name_bytes)
        .map_err(|_| {
            err(
                name_start,
                format!("central directory entry {index}: name is not UTF-8"),
            )
        })?
        .to_owned();
    let extra = bytes
        .get(extra_start..extra_start + extra_len)
        .ok_or_else(|| {
            err(
                pos,
                format!("entry \"{name}\" runs past the end of the file"),
            )
        })?;

    // zip64: a saturated 32-bit field is replaced, in this order, by a u64 of the extra field.
    let saturated = [
        size == 0xFFFF_FFFF,
        compressed == 0xFFFF_FFFF,
        local == 0xFFFF_FFFF,
    ];
    if saturated.iter().any(|&s| s) {
        let mut values = zip64_extra(extra).ok_or_else(|| {
            err(
                extra_start,
                format!("entry \"{name}\" needs zip64 sizes but has no valid zip64 extra field"),
            )
        })?;
        let mut take = |target: &mut u64| -> Result<(), ZipError> {
            *target = values.next().ok_or_else(|| {
                err(
                    extra_start,
                    format!("entry \"{name}\": zip64 extra field too short"),
                )
            })?;
            Ok(())
        };
        if saturated[0] {
            take(&mut size)?;
        }
        if saturated[1] {
            take(&mut compressed)?;
        }
        if saturated[2] {
            take(&mut local)?;
        }
    }

    if flags & 1 != 0 {
        return Err(err(pos, format!("entry \"{name}\" is encrypted")));
    }
    if method != 0 {
        return Err(err(
            pos,
            format!(
                "entry \"{name}\" is compressed (method {method}); only STORED entries, as torch.save writes them, are read"
            ),
        ));
    }
    if compressed != size {
        return Err(err(
            pos,
            format!("entry \"{name}\" is STORED but its compressed size {compressed} differs from its size {size}"),
        ));
    }

    let local = usize::try_from(local).unwrap_or(usize::MAX);
    if u32_at(bytes, local) != Some(LOCAL_SIGNATURE) {
        return Err(err(
            pos,
            format!("entry \"{name}\": no local header at offset {local}"),
        ));
    }
    let local_name_len = usize::from(field(u16_at(bytes, local + 26), local)?);
    let local_extra_len = usize::from(field(u16_at(bytes, local + 28), local)?);
    let local_name = bytes.get(local + LOCAL_LEN..local + LOCAL_LEN + local_name_len);
    if local_name != Some(name_bytes) {
        return Err(err(
            local,
            format!("entry \"{name}\": the local header at {local} names another entry"),
        ));
    }
    let data_start = local + LOCAL_LEN + local_name_len + local_extra_len;
    let data_end = usize::try_from(size)
        .ok()
        .and_then(|n| data_start.checked_add(n))
        .filter(|&e| e <= data_limit)
        .ok_or_else(|| {
            err(
                local,
                format!(
                    "entry \"{name}\": {size} bytes of data from offset {data_start} run past the central directory at {data_limit}"
                ),
            )
        })?;
    Ok((
        name,
        ZipEntry {
            data: data_start..data_end,
            crc32,
        },
        next,
    ))
}

/// The u64 values of the zip64 extended-information extra field, if there is one.
fn zip64_extra(extra: &[u8]) -> Option<impl Iterator<Item = u64> + '_> {
    let mut pos = 0;
    while pos + 4 <= extra.len() {
        let tag = u16_at(extra, pos)?;
        let len = usize::from(u16_at(extra, pos + 2)?);
        let body = extra.get(pos + 4..pos + 4 + len)?;
        if tag == ZIP64_EXTRA_TAG {
            return Some(
                body.chunks_exact(8)
                    .filter_map(|b| b.try_into().ok().map(u64::from_le_bytes)),
            );
        }
        pos += 4 + len;
    }
    None
}

/// The CRC-32 (IEEE 802.3, reflected, as zip uses) of `bytes`: what [`crate::TorchFile`] checks
/// a checkpoint's pickle against, and what a test writing an archive stores.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes
        .iter()
        .fold(!0u32, |c, &b| TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
