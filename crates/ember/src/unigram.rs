//! Ember's own SentencePiece Unigram tokenizer (XLM-RoBERTa: paraphrase-multilingual-*,
//! multilingual-e5-*, bge-m3): text → `<s> … </s>` ids with no heap allocation once its
//! scratch buffers have grown (the `tokenizers` crate allocates a few hundred times per text).
//!
//! It reproduces, id for id, the `tokenizers` 0.22 pipeline these folders describe:
//!
//! ```text
//! raw text ─ added tokens (normalized = false) split out, leftmost-longest
//!   each other piece ─ normalise, in order: Precompiled (SentencePiece charsmap),
//!                      Strip, Replace(" {n,}" or a literal string) — or nothing
//!                    ─ added tokens (normalized = true) split out of the normalised piece
//!   each other piece ─ [WhitespaceSplit:] words = runs of non-whitespace
//!   each word        ─ Metaspace: ' ' → ▁, ▁ prepended (always / first / never) unless the
//!                      word starts with one; [split:] cut before every ▁
//!   each such word   ─ Unigram: the best-scoring segmentation (Viterbi), runs of unknown
//!                      chars fused into one unknown token
//! ids ─ truncated to `max_seq_length − specials`, then the post-processor's specials
//! ```
//!
//! **Precompiled.** The charsmap is `u32 trie size ‖ darts-clone double array ‖ NUL-separated
//! replacement strings`. The text is cut into extended graphemes (`unicode-segmentation`, the
//! crate's version); a grapheme of fewer than 6 bytes whose bytes have a match is replaced,
//! whole, by the replacement of its *shortest* matching prefix (`spm_precompiled` takes the
//! first result of a common-prefix search: a quirk, reproduced); otherwise each char is
//! replaced by its own match, or kept. The double array is checked when loaded: every unit
//! reachable from the root and every replacement it points at is in bounds, so reading it never
//! fails (the crate panics on some corrupt arrays).
//!
//! **Unigram.** The crate's `encode_optimized`: for each char boundary `i`, in order, every
//! vocabulary piece starting at `i` (a trie walk, shortest first) offers
//! `best[i] + score` to `best[i + len]`, which takes it if it has nothing yet or the offer is
//! strictly higher (ties keep the first). A char with no one-char piece offers the unknown
//! token with score `min(scores) − 10`. Scores are `f64`, as in the crate. Backtracking from
//! the end gives the pieces; consecutive unknown pieces are fused and the fused text is looked
//! up again (it is the unknown token unless the vocabulary has it): the crate always fuses
//! (`fuse_unk` is not in `tokenizer.json`), and `byte_fallback` is left to the crate. The
//! vocabulary is a trie of flat arrays built once; a piece listed twice keeps its last id, as
//! the crate's map does.
//!
//! **Metaspace `first`** prepends to a word only when the crate aligns it to the text's first
//! char, which after Precompiled is not simply "starts at byte 0": `"¨"` becomes `" ̈"`, whose
//! second char is aligned to the first input char too ([`OriginTracker`] follows the crate's
//! alignment rules).
//!
//! Which folders qualify is decided in [`crate::tokenize`]; everything else runs on the
//! `tokenizers` crate.

use unicode_segmentation::UnicodeSegmentation;

use crate::bpe::{char_tables, AddedTokenMatcher, BpeAddedToken, CharTables};
use crate::wordpiece::Pieces;

/// Why a tokenizer description cannot be built into a [`UnigramTokenizer`].
#[derive(Debug, thiserror::Error)]
pub enum UnigramError {
    /// The Precompiled normaliser's charsmap is not one Ember can read safely.
    #[error("the Precompiled normaliser's charsmap is corrupt: {0}")]
    CorruptCharsMap(String),
    /// The unknown token's id is past the vocabulary.
    #[error("unk_id {unk_id} is past the vocabulary's {size} pieces")]
    UnkIdOutOfRange {
        /// The model's `unk_id`.
        unk_id: u32,
        /// Pieces in the vocabulary.
        size: usize,
    },
    /// The vocabulary has more pieces than ids fit in `u32`.
    #[error("the vocabulary has {0} pieces, more than u32 ids")]
    VocabularyTooLarge(usize),
    /// A `normalized` added token becomes the empty string once normalised.
    #[error("added token {content:?} normalises to an empty string")]
    EmptyAddedToken {
        /// The added token's content as given.
        content: String,
    },
    /// A Replace normaliser's literal pattern is empty.
    #[error("a Replace normaliser has an empty pattern")]
    EmptyReplacePattern,
    /// The added tokens could not be built into one matcher (too many, or too long).
    #[error("cannot build the added-token matcher: {0}")]
    Matcher(#[from] aho_corasick::BuildError),
}

/// One normaliser of a `Sequence` (or the only one).
#[derive(Clone, Debug, PartialEq)]
pub enum UnigramNormalizerStep {
    /// SentencePiece's precompiled charsmap, as decoded from base64.
    Precompiled(Vec<u8>),
    /// Remove leading (`left`) and trailing (`right`) `char::is_whitespace` chars.
    Strip {
        /// Strip the start.
        left: bool,
        /// Strip the end.
        right: bool,
    },
    /// Replace every maximal run of at least `min_run` `' '` by `content` (the regex
    /// `" {min_run,}"`; XLM-R's converter writes `" {2,}"` → `"▁"`).
    ReplaceSpaceRuns {
        /// Shortest run replaced (≥ 1).
        min_run: usize,
        /// The replacement.
        content: String,
    },
    /// Replace every occurrence of `pattern`, left to right without overlap, by `content`.
    ReplaceLiteral {
        /// The text replaced (not empty).
        pattern: String,
        /// The replacement.
        content: String,
    },
}

/// When Metaspace puts its replacement char in front of a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrependScheme {
    /// Every word.
    Always,
    /// Only a word that starts the text.
    First,
    /// Never.
    Never,
}

/// Everything that defines a SentencePiece Unigram pipeline.
#[derive(Clone, Debug)]
pub struct UnigramSpec {
    /// `(piece, score)` in id order.
    pub vocab: Vec<(String, f64)>,
    /// The unknown token's id.
    pub unk_id: u32,
    /// How each piece of text between added tokens is normalised, in order.
    pub normalizer: Vec<UnigramNormalizerStep>,
    /// WhitespaceSplit runs before Metaspace.
    pub whitespace_split: bool,
    /// Metaspace's replacement for `' '` (`▁`).
    pub replacement: char,
    /// Metaspace's prepend scheme.
    pub prepend_scheme: PrependScheme,
    /// Metaspace cuts words before each replacement char.
    pub split: bool,
    /// Tokens split out of the text before Unigram runs, matched leftmost-longest.
    pub added_tokens: Vec<BpeAddedToken>,
    /// Ids before the Unigram tokens (`<s>`).
    pub prefix_ids: Vec<u32>,
    /// Ids after the Unigram tokens (`</s>`).
    pub suffix_ids: Vec<u32>,
    /// Most ids in one encoding, prefix and suffix included (`max_seq_length`).
    pub max_length: usize,
}

/// Reusable buffers for [`UnigramTokenizer::encode_into`]: they grow to the longest text seen
/// and are then reused, so steady-state encoding allocates nothing.
#[derive(Debug, Default)]
pub struct UnigramScratch {
    normalized: NormalizeScratch,
    words: WordScratch,
}

impl UnigramScratch {
    /// Room for texts of up to `text_bytes` bytes and words of up to
    /// [`WORD_RESERVE`](crate::wordpiece::WORD_RESERVE), so that none of them grows it.
    pub(crate) fn reserve(&mut self, text_bytes: usize) {
        use crate::wordpiece::WORD_RESERVE;
        self.normalized.text.reserve(text_bytes);
        self.normalized.other.reserve(text_bytes);
        self.words.spaced.reserve(WORD_RESERVE);
        self.words.best.reserve(WORD_RESERVE + 1);
        self.words.path.reserve(WORD_RESERVE);
    }
}

/// The normaliser's buffers.
#[derive(Debug, Default)]
struct NormalizeScratch {
    /// The normalised piece, and the other half of each normaliser step.
    text: String,
    other: String,
}

/// The pre-tokeniser's and model's buffers.
#[derive(Debug, Default)]
struct WordScratch {
    /// One word after Metaspace.
    spaced: String,
    /// Viterbi: the best path ending at each byte of a word.
    best: Vec<BestPath>,
    /// The best path's pieces, last first: `(start, end, id)`.
    path: Vec<(u32, u32, u32)>,
}

/// The best segmentation of a word's first `i` bytes: its score, and its last piece's start
/// and id (`start == NO_PATH`: none yet).
#[derive(Clone, Copy, Debug)]
struct BestPath {
    score: f64,
    start: u32,
    id: u32,
}

const NO_PATH: u32 = u32::MAX;
const NO_NODE: u32 = u32::MAX;

/// The crate's `K_UNK_PENALTY`: an unknown char scores this much under the lowest score.
const UNK_PENALTY: f64 = 10.0;

// ---------------------------------------------------------------------------------------------
// The precompiled charsmap.

/// A darts-clone double array unit, read as `spm_precompiled` reads it.
#[derive(Clone, Copy)]
struct Unit(u32);

impl Unit {
    #[inline]
    fn has_leaf(self) -> bool {
        (self.0 >> 8) & 1 == 1
    }

    #[inline]
    fn value(self) -> usize {
        (self.0 & ((1 << 31) - 1)) as usize
    }

    #[inline]
    fn label(self) -> u32 {
        self.0 & ((1 << 31) | 0xFF)
    }

    #[inline]
    fn offset(self) -> usize {
        ((self.0 >> 10) as usize) << ((self.0 & (1 << 9)) >> 6)
    }
}

/// SentencePiece's precompiled normalisation map: a double array over UTF-8 keys whose values
/// index NUL-terminated replacements.
#[derive(Debug)]
struct CharsMap {
    units: Box<[u32]>,
    replacements: Box<str>,
    /// Each ASCII byte's replacement as a byte range of `replacements`, looked up once.
    ascii: [Option<(u32, u32)>; 128],
}

impl CharsMap {
    /// Reads `blob` as `spm_precompiled` does (`u32` little-endian byte size of the array,
    /// the array's `u32` units, then the replacements), and checks that every unit reachable
    /// from the root, and every replacement a leaf points at, is in bounds and on a char
    /// boundary.
    fn new(blob: &[u8]) -> Result<Self, UnigramError> {
        let corrupt = |message: String| UnigramError::CorruptCharsMap(message);
        let size_bytes = blob.get(..4).ok_or_else(|| {
            corrupt(format!(
                "{} bytes, shorter than its 4-byte header",
                blob.len()
            ))
        })?;
        let trie_size =
            u32::from_le_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]])
                as usize;
        // The crate reads `trie_size / 4` units; bytes left over begin the replacements.
        let unit_count = trie_size / 4;
        let units_end = 4 + unit_count * 4;
        if blob.len() < units_end {
            return Err(corrupt(format!(
                "the double array claims {trie_size} bytes, {} are there",
                blob.len() - 4
            )));
        }
        let units: Box<[u32]> = blob[4..units_end]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let replacements = std::str::from_utf8(&blob[units_end..])
            .map_err(|e| corrupt(format!("the replacements are not UTF-8: {e}")))?;
        let mut map = Self {
            units,
            replacements: replacements.into(),
            ascii: [None; 128],
        };
        map.validate().map_err(corrupt)?;
        for b in 1..128u8 {
            map.ascii[b as usize] = map
                .first_match_range(&[b])
                .map(|range| (range.start as u32, range.end as u32));
        }
        Ok(map)
    }

    /// Walks every unit reachable from the root (each node's 255 possible children, labels 1
    /// to 255: a NUL ends the crate's search), as the crate's search would reach them.
    fn validate(&self) -> Result<(), String> {
        let units = &self.units;
        let root = *units.first().ok_or("the double array is empty")?;
        let mut seen = vec![false; units.len()];
        let mut stack = vec![Unit(root).offset()];
        while let Some(base) = stack.pop() {
            for c in 1..=255usize {
                let at = base ^ c;
                let unit = Unit(*units.get(at).ok_or_else(|| {
                    format!("a child of the node at {base} lies at {at}, past the array")
                })?);
                if unit.label() != c as u32 {
                    continue;
                }
                if std::mem::replace(&mut seen[at], true) {
                    continue;
                }
                let next = at ^ unit.offset();
                if unit.has_leaf() {
                    let leaf = Unit(*units.get(next).ok_or_else(|| {
                        format!("the value of the node at {at} lies at {next}, past the array")
                    })?);
                    let start = leaf.value();
                    if !self.replacements.is_char_boundary(start) {
                        return Err(format!(
                            "a replacement starts at byte {start}, outside the {} bytes of replacements or inside a char",
                            self.replacements.len()
                        ));
                    }
                }
                stack.push(next);
            }
        }
        Ok(())
    }

    /// The replacement of the shortest prefix of `key` that has one (the crate's
    /// `results[0]`), as a byte range of `replacements`. The search stops at a NUL byte.
    fn first_match_range(&self, key: &[u8]) -> Option<std::ops::Range<usize>> {
        let units = &self.units;
        let mut node = Unit(*units.first()?).offset();
        for &c in key {
            if c == 0 {
                return None;
            }
            node ^= c as usize;
            let unit = Unit(*units.get(node)?);
            if unit.label() != c as u32 {
                return None;
            }
            node ^= unit.offset();
            if unit.has_leaf() {
                let start = Unit(*units.get(node)?).value();
                let rest = self.replacements.as_bytes().get(start..)?;
                let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                return Some(start..start + len);
            }
        }
        None
    }

    #[inline]
    fn first_match(&self, key: &str) -> Option<&str> {
        if key.len() == 1 {
            let (start, end) = self.ascii[key.as_bytes()[0] as usize & 0x7F]?;
            return self.replacements.get(start as usize..end as usize);
        }
        self.first_match_range(key.as_bytes())
            .and_then(|range| self.replacements.get(range))
    }

    /// The crate's `Precompiled::normalize`: per extended grapheme, the whole grapheme's match
    /// if it is shorter than 6 bytes and has one, else each char's match or the char.
    ///
    /// Returns how many bytes at the start of `out` the crate aligns to the text's first char
    /// (Metaspace's `first` scheme asks): see [`OriginTracker`].
    fn normalize_into(&self, text: &str, out: &mut String) -> usize {
        out.clear();
        let mut origin = OriginTracker::default();
        let bytes = text.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            // ASCII other than CR, followed by ASCII (or the end): a grapheme of its own (no
            // ASCII char extends a grapheme, and only CR LF joins two).
            let b = bytes[at];
            if b < 0x80 && b != b'\r' && bytes.get(at + 1).is_none_or(|&n| n < 0x80) {
                let start = out.len();
                match self.first_match(&text[at..at + 1]) {
                    Some(replacement) => out.push_str(replacement),
                    None => out.push(b as char),
                }
                origin.emitted(true, start, out);
                at += 1;
                continue;
            }
            // A grapheme boundary is known here (the text's start, or after an ASCII char other
            // than CR followed by ASCII: no rule joins those two, while a Prepend char may join
            // the ASCII char after it): segment from here to the next such point.
            let rest = &text[at..];
            let mut stop = rest.len();
            for (i, pair) in rest.as_bytes().windows(2).enumerate() {
                if pair[0] < 0x80 && pair[0] != b'\r' && pair[1] < 0x80 {
                    stop = i + 1;
                    break;
                }
            }
            for grapheme in rest[..stop].graphemes(true) {
                self.normalize_grapheme(grapheme, out, &mut origin);
            }
            at += stop;
        }
        origin.aligned_to_first_char()
    }

    /// One grapheme of [`normalize_into`](Self::normalize_into).
    fn normalize_grapheme(&self, grapheme: &str, out: &mut String, origin: &mut OriginTracker) {
        if grapheme.len() < 6 {
            if let Some(replacement) = self.first_match(grapheme) {
                let start = out.len();
                out.push_str(replacement);
                origin.emitted(grapheme.chars().nth(1).is_none(), start, out);
                return;
            }
        }
        for (i, c) in grapheme.char_indices() {
            let start = out.len();
            match self.first_match(&grapheme[i..i + c.len_utf8()]) {
                Some(replacement) => out.push_str(replacement),
                None => out.push(c),
            }
            origin.emitted(true, start, out);
        }
    }
}

/// Which bytes at the start of Precompiled's output the crate aligns to the input's first char
/// (offset 0), as `NormalizedString::transform` computes alignments from the `(char, change)`
/// list Precompiled builds: each replacement of `o` chars by `n` writes `n` chars of change 0,
/// the last `n − o` of them made `+1` (inserted) when `n > o`; a replacement by fewer chars
/// adds `n − o` to the *list's* last change — the previous replacement's last char when this
/// one is empty (and nothing at all before the first non-empty one). A char of change ≤ 0 takes
/// the alignment of the next input char, one of change > 0 that of the input char before it.
///
/// So only the first non-empty replacement's chars can be aligned to offset 0: its first char;
/// when it replaces one char, the chars inserted after it too — all but the last if a
/// deletion follows it (its change drops to ≤ 0 and it takes the next input char).
#[derive(Debug, Default)]
struct OriginTracker {
    /// The first non-empty replacement was seen: its first char's end, its end, its last
    /// char's start, and whether it replaced one char.
    first: Option<(usize, usize, usize, bool)>,
    /// A deletion followed the first replacement before any other output.
    deleted_after_first: bool,
    /// Output came after the first replacement.
    closed: bool,
}

impl OriginTracker {
    /// One replacement (or kept char) of `one_old` (one input char, else several) wrote
    /// `out[start..]`.
    #[inline]
    fn emitted(&mut self, one_old: bool, start: usize, out: &str) {
        if self.closed {
            return;
        }
        let written = &out[start..];
        match self.first {
            None if !written.is_empty() => {
                let first_end = start + written.chars().next().map_or(0, char::len_utf8);
                let last_start = out.len() - written.chars().next_back().map_or(0, char::len_utf8);
                self.first = Some((first_end, out.len(), last_start, one_old));
            }
            None => {}
            Some(_) if written.is_empty() => self.deleted_after_first = true,
            Some(_) => self.closed = true,
        }
    }

    /// Bytes at the start of the output aligned to the input's first char.
    fn aligned_to_first_char(&self) -> usize {
        match self.first {
            None => 0,
            Some((first_end, _, _, false)) => first_end,
            Some((_, end, _, true)) if !self.deleted_after_first => end,
            Some((first_end, _, last_start, true)) => first_end.max(last_start),
        }
    }
}

/// Checks that the charsmap `blob` (decoded from base64) can be read without going out of
/// bounds, as the Unigram path reads it: the `tokenizers` crate panics on the texts that reach
/// a unit or replacement past the end.
pub(crate) fn check_charsmap(blob: &[u8]) -> Result<(), UnigramError> {
    CharsMap::new(blob).map(drop)
}

// ---------------------------------------------------------------------------------------------
// The vocabulary trie.

/// A trie node: its children are `labels[first..first + count]` (sorted) → `targets`, and it
/// ends the piece `id` (`NO_NODE`: none). 12 bytes: XLM-R's 250k pieces make about a million.
#[derive(Clone, Copy, Debug)]
struct TrieNode {
    first: u32,
    count: u32,
    id: u32,
}

/// The vocabulary as a byte trie in flat arrays, built once; the root's children are a direct
/// table.
#[derive(Debug)]
struct PieceTrie {
    nodes: Vec<TrieNode>,
    labels: Vec<u8>,
    targets: Vec<u32>,
    root: Box<[u32; 256]>,
}

impl PieceTrie {
    /// `pieces`: `(bytes, id)`, one per distinct piece.
    fn new(mut pieces: Vec<(&[u8], u32)>) -> Self {
        pieces.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut trie = Self {
            nodes: Vec::new(),
            labels: Vec::new(),
            targets: Vec::new(),
            root: Box::new([NO_NODE; 256]),
        };
        // Breadth first: (node, the sorted range of pieces under it, its depth).
        let mut queue = std::collections::VecDeque::new();
        trie.nodes.push(TrieNode {
            first: 0,
            count: 0,
            id: NO_NODE,
        });
        queue.push_back((0usize, 0usize, pieces.len(), 0usize));
        while let Some((node, mut lo, hi, depth)) = queue.pop_front() {
            // The piece equal to the prefix sorts first. (An empty piece is never found: the
            // crate's search yields only after a byte.)
            if lo < hi && pieces[lo].0.len() == depth {
                if depth > 0 {
                    trie.nodes[node].id = pieces[lo].1;
                }
                lo += 1;
            }
            trie.nodes[node].first = trie.labels.len() as u32;
            while lo < hi {
                let label = pieces[lo].0[depth];
                let mut end = lo + 1;
                while end < hi && pieces[end].0[depth] == label {
                    end += 1;
                }
                let child = trie.nodes.len();
                trie.nodes.push(TrieNode {
                    first: 0,
                    count: 0,
                    id: NO_NODE,
                });
                trie.labels.push(label);
                trie.targets.push(child as u32);
                if node == 0 {
                    trie.root[label as usize] = child as u32;
                }
                queue.push_back((child, lo, end, depth + 1));
                lo = end;
            }
            trie.nodes[node].count = trie.labels.len() as u32 - trie.nodes[node].first;
        }
        trie
    }

    #[inline]
    fn child(&self, node: u32, label: u8) -> Option<u32> {
        if node == 0 {
            let child = self.root[label as usize];
            return (child != NO_NODE).then_some(child);
        }
        let n = self.nodes[node as usize];
        let (first, count) = (n.first as usize, n.count as usize);
        let labels = &self.labels[first..first + count];
        let at = if count <= 8 {
            labels.iter().position(|&l| l == label)?
        } else {
            labels.binary_search(&label).ok()?
        };
        Some(self.targets[first + at])
    }

    /// The id of the piece exactly `key`.
    fn id_of(&self, key: &[u8]) -> Option<u32> {
        let mut node = 0;
        for &b in key {
            node = self.child(node, b)?;
        }
        let id = self.nodes[node as usize].id;
        (id != NO_NODE).then_some(id)
    }
}

// ---------------------------------------------------------------------------------------------
// The tokenizer.

/// A normaliser step with its charsmap loaded.
#[derive(Debug)]
enum Step {
    Precompiled(Box<CharsMap>),
    Strip { left: bool, right: bool },
    ReplaceSpaceRuns { min_run: usize, content: String },
    ReplaceLiteral { pattern: String, content: String },
}

/// A SentencePiece Unigram tokenizer that reuses caller-owned buffers.
pub struct UnigramTokenizer {
    tables: &'static CharTables,
    steps: Vec<Step>,
    /// Added tokens matched in the raw text.
    raw_added: Option<AddedTokenMatcher>,
    /// Added tokens matched in each normalised piece.
    normalized_added: Option<AddedTokenMatcher>,
    whitespace_split: bool,
    replacement: char,
    prepend_scheme: PrependScheme,
    split: bool,
    trie: PieceTrie,
    /// Each id's score.
    scores: Box<[f64]>,
    unk_id: u32,
    unk_score: f64,
    prefix_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
    /// Unigram tokens kept: `max_length − prefix − suffix`.
    max_pieces: usize,
}

impl UnigramTokenizer {
    /// Builds the vocabulary trie, charsmap and added-token matchers of `spec`.
    ///
    /// # Errors
    ///
    /// [`UnigramError::CorruptCharsMap`] for a charsmap that is not safe to read, and the
    /// other [`UnigramError`]s for a vocabulary, Replace or added tokens that cannot be used.
    pub fn new(spec: &UnigramSpec) -> Result<Self, UnigramError> {
        let size = spec.vocab.len();
        if u32::try_from(size).is_err() {
            return Err(UnigramError::VocabularyTooLarge(size));
        }
        if spec.unk_id as usize >= size {
            return Err(UnigramError::UnkIdOutOfRange {
                unk_id: spec.unk_id,
                size,
            });
        }
        // The crate's map: a piece listed twice keeps its last id (and that id's score).
        let mut last_id = std::collections::HashMap::with_capacity(size);
        let mut min_score = f64::INFINITY;
        for (id, (piece, score)) in spec.vocab.iter().enumerate() {
            last_id.insert(piece.as_str(), id as u32);
            if *score < min_score {
                min_score = *score;
            }
        }
        let pieces = last_id
            .into_iter()
            .map(|(piece, id)| (piece.as_bytes(), id))
            .collect();
        let trie = PieceTrie::new(pieces);
        let scores = spec.vocab.iter().map(|&(_, score)| score).collect();

        let mut steps = Vec::with_capacity(spec.normalizer.len());
        for step in &spec.normalizer {
            steps.push(match step {
                UnigramNormalizerStep::Precompiled(blob) => {
                    Step::Precompiled(Box::new(CharsMap::new(blob)?))
                }
                &UnigramNormalizerStep::Strip { left, right } => Step::Strip { left, right },
                UnigramNormalizerStep::ReplaceSpaceRuns { min_run, content } => {
                    Step::ReplaceSpaceRuns {
                        min_run: (*min_run).max(1),
                        content: content.clone(),
                    }
                }
                UnigramNormalizerStep::ReplaceLiteral { pattern, content } => {
                    if pattern.is_empty() {
                        return Err(UnigramError::EmptyReplacePattern);
                    }
                    Step::ReplaceLiteral {
                        pattern: pattern.clone(),
                        content: content.clone(),
                    }
                }
            });
        }

        let fixed = spec.prefix_ids.len() + spec.suffix_ids.len();
        let mut tokenizer = Self {
            tables: char_tables(),
            steps,
            raw_added: None,
            normalized_added: None,
            whitespace_split: spec.whitespace_split,
            replacement: spec.replacement,
            prepend_scheme: spec.prepend_scheme,
            split: spec.split,
            trie,
            scores,
            unk_id: spec.unk_id,
            unk_score: min_score - UNK_PENALTY,
            prefix_ids: spec.prefix_ids.clone(),
            suffix_ids: spec.suffix_ids.clone(),
            max_pieces: spec.max_length.saturating_sub(fixed),
        };

        let mut scratch = NormalizeScratch::default();
        let mut raw = Vec::new();
        let mut normalized = Vec::new();
        for token in &spec.added_tokens {
            if token.content.is_empty() {
                // The `tokenizers` crate ignores empty added tokens.
                continue;
            }
            if token.normalized {
                let (pattern, _) = tokenizer.normalize(&token.content, &mut scratch);
                if pattern.is_empty() {
                    return Err(UnigramError::EmptyAddedToken {
                        content: token.content.clone(),
                    });
                }
                normalized.push((pattern.to_owned(), token.clone()));
            } else {
                raw.push((token.content.clone(), token.clone()));
            }
        }
        tokenizer.raw_added = AddedTokenMatcher::new(raw)?;
        tokenizer.normalized_added = AddedTokenMatcher::new(normalized)?;
        Ok(tokenizer)
    }

    /// Tokenizes `text` into `ids` (cleared first): prefix, at most `max_length − specials`
    /// Unigram tokens, suffix. Allocates only while `ids` or `scratch` grow.
    pub fn encode_into(&self, text: &str, ids: &mut Vec<u32>, scratch: &mut UnigramScratch) {
        self.encode(text, ids, scratch, false);
    }

    /// [`encode_into`](Self::encode_into) that also counts the tokens truncation drops, and
    /// returns that count (0 when the text fits). Tokenizes the whole text.
    pub fn encode_into_counting_dropped(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        scratch: &mut UnigramScratch,
    ) -> usize {
        self.encode(text, ids, scratch, true)
    }

    fn encode(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        scratch: &mut UnigramScratch,
        count_dropped: bool,
    ) -> usize {
        ids.clear();
        ids.extend_from_slice(&self.prefix_ids);
        let mut pieces = Pieces {
            limit: self.prefix_ids.len() + self.max_pieces,
            ids: &mut *ids,
            count_dropped,
            dropped: 0,
        };
        match &self.raw_added {
            None => self.encode_piece(text, true, &mut pieces, scratch),
            Some(matcher) => matcher.split(self.tables, text, |range, added| {
                match added {
                    Some(id) => pieces.push_word(|ids| ids.push(id)),
                    None => {
                        let at_start = range.start == 0;
                        self.encode_piece(&text[range], at_start, &mut pieces, scratch)
                    }
                }
                !pieces.done()
            }),
        }
        let dropped = pieces.dropped;
        ids.extend_from_slice(&self.suffix_ids);
        dropped
    }

    /// Normalises `raw` by the steps into `scratch` (or returns `raw` when there are none).
    ///
    /// Also returns how many bytes at the start of the result the crate aligns to `raw`'s first
    /// char (see [`CharsMap::normalize_into`]); exact for Precompiled and Strip of the right
    /// (the only steps [`crate::tokenize`] lets WhitespaceSplit with Metaspace's `first`
    /// scheme run after), and otherwise only says whether the first char is (it is, when any
    /// text is left).
    fn normalize<'a>(&self, raw: &'a str, scratch: &'a mut NormalizeScratch) -> (&'a str, usize) {
        let first_char = |text: &str| text.chars().next().map_or(0, char::len_utf8);
        if self.steps.is_empty() {
            return (raw, first_char(raw));
        }
        let NormalizeScratch {
            text: normalized,
            other,
        } = scratch;
        normalized.clear();
        normalized.push_str(raw);
        let mut origin = first_char(normalized);
        for step in &self.steps {
            match step {
                Step::Precompiled(map) => {
                    origin = map.normalize_into(normalized, other);
                    std::mem::swap(normalized, other);
                }
                &Step::Strip { left, right } => {
                    if right {
                        let kept = normalized.trim_end_matches(char::is_whitespace).len();
                        normalized.truncate(kept);
                    }
                    if left {
                        let cut = normalized.len()
                            - normalized.trim_start_matches(char::is_whitespace).len();
                        normalized.drain(..cut);
                        origin = first_char(normalized);
                    }
                }
                Step::ReplaceSpaceRuns { min_run, content } => {
                    if !normalized.contains(' ') {
                        continue;
                    }
                    other.clear();
                    let bytes = normalized.as_bytes();
                    let mut at = 0;
                    let mut copied = 0;
                    while at < bytes.len() {
                        if bytes[at] != b' ' {
                            at += 1;
                            continue;
                        }
                        let run = bytes[at..].iter().take_while(|&&b| b == b' ').count();
                        if run >= *min_run {
                            other.push_str(&normalized[copied..at]);
                            other.push_str(content);
                            copied = at + run;
                        }
                        at += run;
                    }
                    other.push_str(&normalized[copied..]);
                    std::mem::swap(normalized, other);
                    origin = first_char(normalized);
                }
                Step::ReplaceLiteral { pattern, content } => {
                    if !normalized.contains(pattern.as_str()) {
                        continue;
                    }
                    other.clear();
                    let mut copied = 0;
                    for (at, found) in normalized.match_indices(pattern.as_str()) {
                        other.push_str(&normalized[copied..at]);
                        other.push_str(content);
                        copied = at + found.len();
                    }
                    other.push_str(&normalized[copied..]);
                    std::mem::swap(normalized, other);
                    origin = first_char(normalized);
                }
            }
        }
        let origin = origin.min(normalized.len());
        (normalized.as_str(), origin)
    }

    /// Normalises one stretch of raw text between added tokens and appends its tokens.
    /// `at_start`: it begins the text (Metaspace's `first` scheme asks whether a word is
    /// aligned to the text's first char).
    fn encode_piece(
        &self,
        raw: &str,
        at_start: bool,
        pieces: &mut Pieces<'_>,
        scratch: &mut UnigramScratch,
    ) {
        if pieces.done() {
            return;
        }
        let UnigramScratch { normalized, words } = scratch;
        let (text, origin) = self.normalize(raw, normalized);
        // Bytes of `text` aligned to the text's first char.
        let origin = if at_start { origin } else { 0 };
        match &self.normalized_added {
            None => self.encode_words(text, origin, pieces, words),
            Some(matcher) => matcher.split(self.tables, text, |range, added| {
                match added {
                    Some(id) => pieces.push_word(|ids| ids.push(id)),
                    None => {
                        let origin = origin.saturating_sub(range.start);
                        self.encode_words(&text[range], origin, pieces, words)
                    }
                }
                !pieces.done()
            }),
        }
    }

    /// The pre-tokeniser (WhitespaceSplit, Metaspace) and the model over one normalised piece.
    /// `origin`: how many bytes at its start are aligned to the text's first char.
    fn encode_words(
        &self,
        text: &str,
        origin: usize,
        pieces: &mut Pieces<'_>,
        scratch: &mut WordScratch,
    ) {
        if !self.whitespace_split {
            if !text.is_empty() {
                self.encode_metaspace(text, origin > 0, pieces, scratch);
            }
            return;
        }
        let mut at = 0;
        for word in text.split(char::is_whitespace) {
            if !word.is_empty() && !pieces.done() {
                self.encode_metaspace(word, at < origin, pieces, scratch);
            }
            // The separator is one whitespace char.
            at += word.len()
                + text[at + word.len()..]
                    .chars()
                    .next()
                    .map_or(0, char::len_utf8);
        }
    }

    /// Metaspace over one word (`' '` → replacement, prepended per the scheme, cut before each
    /// replacement), then Unigram over each part.
    fn encode_metaspace(
        &self,
        word: &str,
        at_start: bool,
        pieces: &mut Pieces<'_>,
        scratch: &mut WordScratch,
    ) {
        let WordScratch { spaced, best, path } = scratch;
        let rep = self.replacement;
        // The crate checks after replacing ' ' by `rep`.
        let starts_with_rep = word.starts_with(rep) || word.starts_with(' ');
        let prepend = !starts_with_rep
            && match self.prepend_scheme {
                PrependScheme::Always => true,
                PrependScheme::First => at_start,
                PrependScheme::Never => false,
            };
        let word = if prepend || (rep != ' ' && word.contains(' ')) {
            spaced.clear();
            if prepend {
                spaced.push(rep);
            }
            for c in word.chars() {
                spaced.push(if c == ' ' { rep } else { c });
            }
            spaced.as_str()
        } else {
            word
        };
        if !self.split {
            pieces.push_word(|ids| self.encode_unigram(word, ids, best, path));
            return;
        }
        // MergedWithNext: each part runs from a replacement char to the next.
        let mut start = 0;
        for (at, _) in word.match_indices(rep) {
            if at > start {
                let part = &word[start..at];
                pieces.push_word(|ids| self.encode_unigram(part, ids, best, path));
                if pieces.done() {
                    return;
                }
            }
            start = at;
        }
        if start < word.len() {
            let part = &word[start..];
            pieces.push_word(|ids| self.encode_unigram(part, ids, best, path));
        }
    }

    /// The crate's `Unigram::encode_optimized` then `tokenize` over one word.
    fn encode_unigram(
        &self,
        word: &str,
        ids: &mut Vec<u32>,
        best: &mut Vec<BestPath>,
        path: &mut Vec<(u32, u32, u32)>,
    ) {
        let bytes = word.as_bytes();
        let size = bytes.len();
        if size == 0 {
            return;
        }
        best.clear();
        best.resize(
            size + 1,
            BestPath {
                score: 0.0,
                start: NO_PATH,
                id: 0,
            },
        );
        let mut start = 0;
        while start < size {
            let here = best[start].score;
            let char_len = utf8_len(bytes[start]);
            let mut has_single = false;
            let mut node = 0u32;
            for (i, &b) in bytes[start..].iter().enumerate() {
                let Some(child) = self.trie.child(node, b) else {
                    break;
                };
                node = child;
                let id = self.trie.nodes[node as usize].id;
                if id == NO_NODE {
                    continue;
                }
                let end = start + i + 1;
                let candidate = self.scores[id as usize] + here;
                let target = &mut best[end];
                if target.start == NO_PATH || candidate > target.score {
                    *target = BestPath {
                        score: candidate,
                        start: start as u32,
                        id,
                    };
                }
                if i + 1 == char_len {
                    has_single = true;
                }
            }
            if !has_single {
                let candidate = self.unk_score + here;
                let target = &mut best[start + char_len];
                if target.start == NO_PATH || candidate > target.score {
                    *target = BestPath {
                        score: candidate,
                        start: start as u32,
                        id: self.unk_id,
                    };
                }
            }
            start += char_len;
        }

        // Backtrack, last piece first; runs of unknown pieces become one.
        path.clear();
        let mut end = size;
        let mut unk_end = None;
        while end > 0 {
            let node = best[end];
            // Every char boundary is reached: each char offers at least the unknown token.
            let start = node.start as usize;
            if node.id == self.unk_id {
                unk_end.get_or_insert(end);
            } else {
                if let Some(unk_end) = unk_end.take() {
                    path.push((end as u32, unk_end as u32, self.unk_id));
                }
                path.push((start as u32, end as u32, node.id));
            }
            end = start;
        }
        if let Some(unk_end) = unk_end {
            path.push((0, unk_end as u32, self.unk_id));
        }
        for &(start, end, id) in path.iter().rev() {
            // A fused run is looked up again: the vocabulary may hold it whole.
            let id = if id == self.unk_id {
                self.trie
                    .id_of(&bytes[start as usize..end as usize])
                    .unwrap_or(self.unk_id)
            } else {
                id
            };
            ids.push(id);
        }
    }
}

/// The byte length of the UTF-8 sequence a lead byte starts.
#[inline]
fn utf8_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made double array over the keys `"a"` → `"A"` and `"ab"` → `"X"` (and nothing
    /// under `"b"`), laid out as darts-clone does: the root's children at `base ^ label`, a
    /// node's value at its own base (label 0).
    fn tiny_charsmap() -> Vec<u8> {
        // Unit fields: label in bits 0-7 (bit 31 for values), has_leaf bit 8, offset in bits
        // 10.. (bit 9 clear: not shifted). Value units hold the value in bits 0-30.
        let unit = |label: u32, has_leaf: bool, offset: u32| -> u32 {
            label | (u32::from(has_leaf) << 8) | (offset << 10)
        };
        let value = |v: u32| (1 << 31) | v;
        let mut units = vec![0u32; 512];
        // Root at 0, its base 256: child 'a' at 256 ^ 'a'.
        units[0] = unit(0, false, 256);
        let a = 256 ^ b'a' as usize;
        // 'a' has a leaf; its base is a ^ offset = 0x180 (value at 0x180, child 'b' at 0x180^'b').
        let a_base = 0x180usize;
        units[a] = unit(b'a' as u32, true, (a ^ a_base) as u32);
        units[a_base] = value(0); // "A"
        let ab = a_base ^ b'b' as usize;
        let ab_base = 0x100usize;
        units[ab] = unit(b'b' as u32, true, (ab ^ ab_base) as u32);
        units[ab_base] = value(2); // "X"
        let mut blob = ((units.len() * 4) as u32).to_le_bytes().to_vec();
        for u in units {
            blob.extend(u.to_le_bytes());
        }
        blob.extend(b"A\0X\0");
        blob
    }

    #[test]
    fn reads_a_hand_made_double_array() {
        let map = CharsMap::new(&tiny_charsmap()).unwrap();
        assert_eq!(map.first_match("a"), Some("A"));
        // The shortest prefix wins: "ab" finds "a" first.
        assert_eq!(map.first_match("ab"), Some("A"));
        assert_eq!(map.first_match("b"), None);
        assert_eq!(map.first_match("\0a"), None);
        let mut out = String::new();
        map.normalize_into("cab", &mut out);
        assert_eq!(out, "cAb");
    }

    #[test]
    fn corrupt_charsmaps_are_errors() {
        let good = tiny_charsmap();
        assert!(CharsMap::new(&[]).is_err());
        assert!(CharsMap::new(&good[..3]).is_err());
        // The size claims more units than there are.
        assert!(CharsMap::new(&good[..100]).is_err());
        // An empty array.
        assert!(CharsMap::new(&0u32.to_le_bytes()).is_err());
        // Replacements that are not UTF-8.
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 2] = 0xFF;
        assert!(CharsMap::new(&bad).is_err());
        // A value past the replacements.
        let mut bad = good.clone();
        let at = 4 + 0x180 * 4;
        bad[at..at + 4].copy_from_slice(&((1u32 << 31) | 1000).to_le_bytes());
        assert!(CharsMap::new(&bad).is_err());
        // A root whose children lie past the array.
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&((4096u32) << 10).to_le_bytes());
        assert!(CharsMap::new(&bad).is_err());
        // Random corruption never panics.
        let mut state = 3u64;
        for _ in 0..2000 {
            let mut bad = good.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % bad.len() as u64) as usize;
                bad[at] = (state >> 32) as u8;
            }
            if let Ok(map) = CharsMap::new(&bad) {
                let mut out = String::new();
                map.normalize_into("ab a\u{301}b ba", &mut out);
            }
        }
    }

    /// `"¨"` → `" ̈"` (one char to two): both chars are aligned to the first input char, unless
    /// a deletion follows, which turns the inserted char into one that takes the next input char.
    #[test]
    fn origin_follows_the_crate_alignments() {
        let aligned = |emissions: &[(bool, &str)]| {
            let (mut out, mut tracker) = (String::new(), OriginTracker::default());
            for &(one_old, written) in emissions {
                let start = out.len();
                out.push_str(written);
                tracker.emitted(one_old, start, &out);
            }
            out[..tracker.aligned_to_first_char()].to_owned()
        };
        assert_eq!(aligned(&[(true, " \u{308}"), (true, "a")]), " \u{308}");
        assert_eq!(aligned(&[(true, " \u{308}"), (true, ""), (true, "a")]), " ");
        assert_eq!(
            aligned(&[(true, ""), (true, " \u{308}"), (true, "a")]),
            " \u{308}"
        );
        // A replacement of several chars: only its first char.
        assert_eq!(aligned(&[(false, "abc"), (true, "d")]), "a");
        assert_eq!(aligned(&[(true, "x"), (true, "y")]), "x");
        assert_eq!(aligned(&[(true, "")]), "");
    }

    fn spec(vocab: &[(&str, f64)]) -> UnigramSpec {
        UnigramSpec {
            vocab: vocab.iter().map(|&(p, s)| (p.to_owned(), s)).collect(),
            unk_id: 0,
            normalizer: Vec::new(),
            whitespace_split: false,
            replacement: '▁',
            prepend_scheme: PrependScheme::Never,
            split: true,
            added_tokens: Vec::new(),
            prefix_ids: Vec::new(),
            suffix_ids: Vec::new(),
            max_length: 64,
        }
    }

    fn encode(t: &UnigramTokenizer, text: &str) -> Vec<u32> {
        let (mut ids, mut scratch) = (Vec::new(), UnigramScratch::default());
        t.encode_into(text, &mut ids, &mut scratch);
        ids
    }

    #[test]
    fn viterbi_ties_keep_the_first_path() {
        // "a|bc" and "ab|c" both score -2. Starts are visited in order and an end keeps its
        // first offer unless a later one is strictly higher.
        let t = UnigramTokenizer::new(&spec(&[
            ("<unk>", 0.0),
            ("a", -1.0),
            ("ab", -1.0),
            ("bc", -1.0),
            ("c", -1.0),
            ("b", -5.0),
        ]))
        .unwrap();
        // best[3] is first offered "bc" from start 1 (-1 + -1), then "c" from start 2
        // (-1 + -1): equal, the first stays.
        assert_eq!(encode(&t, "abc"), [1, 3]);
        // Strictly better wins.
        let t = UnigramTokenizer::new(&spec(&[
            ("<unk>", 0.0),
            ("a", -1.0),
            ("ab", -1.0),
            ("bc", -1.5),
            ("c", -0.9),
            ("b", -5.0),
        ]))
        .unwrap();
        assert_eq!(encode(&t, "abc"), [2, 4]);
    }

    #[test]
    fn unknown_chars_fuse_and_are_looked_up_again() {
        let t =
            UnigramTokenizer::new(&spec(&[("<unk>", 0.0), ("a", -1.0), ("xy", -50.0)])).unwrap();
        // "x", "y", "z" have no one-char piece: unknown (score min − 10 = -60), fused. "xy"
        // (-50) beats x|y (-120).
        assert_eq!(encode(&t, "azzza"), [1, 0, 1]);
        assert_eq!(encode(&t, "xy"), [2]);
        assert_eq!(encode(&t, "zzxy"), [0, 2]);
        // A repeated piece keeps its last id.
        let t = UnigramTokenizer::new(&spec(&[("<unk>", 0.0), ("a", -1.0), ("a", -2.0)])).unwrap();
        assert_eq!(encode(&t, "a"), [2]);
        assert_eq!(encode(&t, ""), [] as [u32; 0]);
    }

    #[test]
    fn metaspace_cuts_before_each_replacement() {
        let mut s = spec(&[("<unk>", 0.0), ("▁a", -1.0), ("▁", -2.0), ("a", -3.0)]);
        s.prepend_scheme = PrependScheme::Always;
        let t = UnigramTokenizer::new(&s).unwrap();
        assert_eq!(encode(&t, "a  a"), [1, 2, 1]);
        s.prepend_scheme = PrependScheme::Never;
        let t = UnigramTokenizer::new(&s).unwrap();
        assert_eq!(encode(&t, "a a"), [3, 1]);
        s.whitespace_split = true;
        s.prepend_scheme = PrependScheme::First;
        let t = UnigramTokenizer::new(&s).unwrap();
        assert_eq!(encode(&t, "a a"), [1, 3]);
        assert_eq!(encode(&t, " a a"), [3, 3]);
    }

    #[test]
    fn replace_space_runs_and_strip() {
        let mut s = spec(&[("<unk>", 0.0), ("a", -1.0), ("▁", -1.0), (" ", -1.0)]);
        s.normalizer = vec![
            UnigramNormalizerStep::Strip {
                left: false,
                right: true,
            },
            UnigramNormalizerStep::ReplaceSpaceRuns {
                min_run: 2,
                content: "▁".into(),
            },
        ];
        s.replacement = '#';
        s.split = false;
        let t = UnigramTokenizer::new(&s).unwrap();
        let mut scratch = NormalizeScratch::default();
        assert_eq!(t.normalize("a  a a   a   ", &mut scratch).0, "a▁a a▁a");
    }
}
