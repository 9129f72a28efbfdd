//! Ember's own BERT WordPiece tokenizer: text → `[CLS] … [SEP]` ids with no heap allocation
//! once its scratch buffers have grown (the `tokenizers` crate allocates several strings,
//! vectors and hash-map entries per text).
//!
//! It reproduces, id for id, the `tokenizers` 0.22 pipeline that BERT folders describe:
//!
//! ```text
//! raw text ─ added tokens (normalized = false) split out, leftmost-longest
//!   each other piece ─ normalise:  [Lowercase] → BertNormalizer
//!                      clean_text (drop NUL, U+FFFD, Cc/Cf/Co; whitespace → ' ')
//!                      handle_chinese_chars (' ' c ' ' around CJK ideographs)
//!                      strip_accents (NFD, canonical reordering, drop Mn)
//!                      lowercase (char::to_lowercase)
//!                    ─ added tokens (normalized = true) split out of the normalised piece
//!                    ─ BertPreTokenizer: split on whitespace, isolate each punctuation char
//!                    ─ WordPiece: greedy longest match first, `##` continuations,
//!                      words over `max_input_chars_per_word` chars → [UNK]
//! ids ─ truncated to `max_seq_length − 2`, then [CLS] … [SEP] (no padding)
//! ```
//!
//! Character classes come from the crates the `tokenizers` crate itself uses
//! (`unicode_categories` for Cc/Cf/Co, Mn and P*, `unicode-normalization-alignments` for
//! decompositions and combining classes, `aho-corasick` for the added-token search), and
//! whitespace and lower-casing from `std`, so the tables agree by construction. Which folders
//! qualify is decided in [`crate::tokenize`]; everything else runs on the `tokenizers` crate.
//!
//! Since truncation keeps the first word pieces, encoding stops at the first word that fills
//! `max_seq_length − 2` pieces: a long text costs no more than its first few hundred tokens.
//! A caller who wants to know how many pieces were dropped asks for the whole text to be
//! counted ([`WordPieceTokenizer::encode_into_counting_dropped`]): linear in its length, and
//! still without keeping more than one word past the limit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use aho_corasick::{AhoCorasick, MatchKind};
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::char::{canonical_combining_class, decompose_canonical};

/// Why a tokenizer description cannot be built into a [`WordPieceTokenizer`].
#[derive(Debug, thiserror::Error)]
pub enum WordPieceError {
    /// [`WordPieceSpec::unk_token`] (named here) has no id in the vocabulary.
    #[error("the unknown token {0:?} is not in the vocabulary")]
    MissingUnkToken(String),
    /// A `normalized` added token becomes the empty string once normalised (e.g. a lone
    /// combining accent under `strip_accents`), so it could match everywhere.
    #[error("added token {content:?} normalises to an empty string")]
    EmptyAddedToken {
        /// The added token's content as given.
        content: String,
    },
    /// The added tokens could not be built into one matcher (too many, or too long).
    #[error("cannot build the added-token matcher: {0}")]
    Matcher(#[from] aho_corasick::BuildError),
}

/// The BERT normaliser's switches, with `strip_accents` already resolved (`null` in
/// `tokenizer.json` follows `lowercase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BertNormalization {
    /// A `Lowercase` normaliser runs first (sentence-transformers' `do_lower_case` prepends
    /// one to the tokenizer's own normaliser).
    pub lowercase_first: bool,
    /// Drop NUL, U+FFFD and control / format / private-use characters; every whitespace
    /// character becomes `' '`.
    pub clean_text: bool,
    /// Put spaces around each CJK ideograph, so that each becomes a word of its own.
    pub handle_chinese_chars: bool,
    /// Decompose (NFD) and drop nonspacing marks: `é` → `e`.
    pub strip_accents: bool,
    /// Lower-case with `char::to_lowercase` (after `strip_accents`).
    pub lowercase: bool,
}

/// A token from `tokenizer.json`'s `added_tokens` (or a special token of a `vocab.txt`
/// folder), matched in the text before WordPiece runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedTokenSpec {
    /// The token's text, e.g. `[CLS]` or `[MASK]`.
    pub content: String,
    /// The id it encodes to.
    pub id: u32,
    /// Swallow the whitespace to its left. (It would be dropped by the pre-tokeniser
    /// anyway, so this never changes the ids; it is mirrored to keep the splits identical.)
    pub lstrip: bool,
    /// Swallow the whitespace to its right (see `lstrip`).
    pub rstrip: bool,
    /// Matched in the normalised text (its content normalised too) rather than the raw text.
    pub normalized: bool,
}

/// Everything that defines a BERT WordPiece pipeline.
#[derive(Clone, Debug)]
pub struct WordPieceSpec {
    /// Token → id, continuation pieces with their prefix (`##ing`).
    pub vocab: HashMap<String, u32>,
    /// The token a word with no WordPiece split encodes to (`[UNK]`); must be in `vocab`.
    pub unk_token: String,
    /// The prefix marking a piece that continues a word (`##`).
    pub continuing_subword_prefix: String,
    /// Words longer than this, in chars, become `unk_token` whole (100 for BERT).
    pub max_input_chars_per_word: usize,
    /// How the text is normalised (and the contents of `normalized` added tokens).
    pub normalization: BertNormalization,
    /// Tokens split out of the text before WordPiece runs, matched leftmost-longest.
    pub added_tokens: Vec<AddedTokenSpec>,
    /// Ids before and after the word pieces: `[CLS]` and `[SEP]` for BERT.
    pub prefix_ids: Vec<u32>,
    /// Ids after the word pieces (`[SEP]`).
    pub suffix_ids: Vec<u32>,
    /// Most ids in one encoding, prefix and suffix included (`max_seq_length`).
    pub max_length: usize,
}

/// Reusable buffers for [`WordPieceTokenizer::encode_into`]: they grow to the longest text
/// seen and are then reused, so steady-state encoding allocates nothing.
#[derive(Debug, Default)]
pub struct WordPieceScratch {
    /// The normalised piece the pre-tokeniser reads.
    normalized: String,
    /// Non-starters awaiting canonical reordering: `(combining class, char)`.
    pending_marks: Vec<(u8, char)>,
}

impl WordPieceScratch {
    /// Room for texts of up to `text_bytes` bytes, so that none of them grows it.
    pub(crate) fn reserve(&mut self, text_bytes: usize) {
        self.normalized.reserve(text_bytes);
        self.pending_marks.reserve(WORD_RESERVE);
    }
}

/// What a scratch reserves for one word's buffers (its symbols, pieces, marks): words of more
/// bytes than this are rare, and grow them once.
pub(crate) const WORD_RESERVE: usize = 256;

/// FxHash (rustc's): vocabulary keys are fixed at load, so a fast non-keyed hash is safe and
/// roughly halves a lookup's cost against SipHash. Also the BPE path's ([`crate::bpe`]).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.add(byte as u64);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

type FxMap = HashMap<Box<str>, u32, BuildHasherDefault<FxHasher>>;

/// Word pieces of one kind (word-initial, or continuation with the prefix removed), with the
/// byte length of the longest so that no longer candidate is ever looked up.
struct PieceTable {
    ids: FxMap,
    longest: usize,
}

impl PieceTable {
    fn new<'a>(entries: impl Iterator<Item = (&'a str, u32)>) -> Self {
        let mut ids = FxMap::default();
        let mut longest = 0;
        for (piece, id) in entries {
            longest = longest.max(piece.len());
            ids.insert(piece.into(), id);
        }
        Self { ids, longest }
    }
}

/// An added-token search over raw or normalised text.
struct AddedTokenMatcher {
    automaton: AhoCorasick,
    /// Per pattern: `(id, lstrip, rstrip)`.
    tokens: Vec<(u32, bool, bool)>,
}

impl AddedTokenMatcher {
    /// `None` when there is nothing to match.
    fn new(patterns: &[(String, &AddedTokenSpec)]) -> Result<Option<Self>, WordPieceError> {
        if patterns.is_empty() {
            return Ok(None);
        }
        // The `tokenizers` crate's own settings: leftmost-longest, so "[CLS]" wins over "[C".
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|(pattern, _)| pattern))?;
        let tokens = patterns
            .iter()
            .map(|(_, token)| (token.id, token.lstrip, token.rstrip))
            .collect();
        Ok(Some(Self { automaton, tokens }))
    }

    /// Calls `on_split(range, Some(id))` for each added token in `text` and
    /// `on_split(range, None)` for each non-empty stretch between them, in order, as the
    /// `tokenizers` crate's `AddedVocabulary::find_matches` splits. Stops when `on_split`
    /// returns false.
    fn split(
        &self,
        text: &str,
        mut on_split: impl FnMut(std::ops::Range<usize>, Option<u32>) -> bool,
    ) {
        let mut done = 0;
        for found in self.automaton.find_iter(text) {
            let (id, lstrip, rstrip) = self.tokens[found.pattern().as_usize()];
            let (mut start, mut stop) = (found.start(), found.end());
            if lstrip {
                let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
                start = trimmed.max(done);
            }
            if rstrip {
                let rest = &text[stop..];
                stop += rest.len() - rest.trim_start_matches(char::is_whitespace).len();
            }
            if done < start && !on_split(done..start, None) {
                return;
            }
            if !on_split(start..stop, Some(id)) {
                return;
            }
            done = stop;
        }
        if done < text.len() {
            on_split(done..text.len(), None);
        }
    }
}

/// A BERT WordPiece tokenizer that reuses caller-owned buffers.
///
/// ```
/// use std::collections::HashMap;
/// use ember::wordpiece::{BertNormalization, WordPieceScratch, WordPieceSpec, WordPieceTokenizer};
///
/// let vocab: HashMap<String, u32> = ["[UNK]", "[CLS]", "[SEP]", "play", "##ing", "cafe", "!"]
///     .iter()
///     .enumerate()
///     .map(|(id, token)| (token.to_string(), id as u32))
///     .collect();
/// let bert = BertNormalization {
///     lowercase_first: false,
///     clean_text: true,
///     handle_chinese_chars: true,
///     strip_accents: true,
///     lowercase: true,
/// };
/// let spec = WordPieceSpec {
///     vocab,
///     unk_token: "[UNK]".into(),
///     continuing_subword_prefix: "##".into(),
///     max_input_chars_per_word: 100,
///     normalization: bert,
///     added_tokens: Vec::new(),
///     prefix_ids: vec![1], // [CLS]
///     suffix_ids: vec![2], // [SEP]
///     max_length: 6,
/// };
/// let tokenizer = WordPieceTokenizer::new(&spec)?;
/// let (mut ids, mut scratch) = (Vec::new(), WordPieceScratch::default());
/// tokenizer.encode_into("Playing at the CAFÉ!", &mut ids, &mut scratch);
/// // [CLS] play ##ing [UNK] [UNK] [SEP]: "at" and "the" are not in the vocabulary, and
/// // `max_length` 6 leaves room for four pieces, so "cafe" and "!" are dropped.
/// assert_eq!(ids, [1, 3, 4, 0, 0, 2]);
/// let dropped = tokenizer.encode_into_counting_dropped("Playing at the CAFÉ!", &mut ids, &mut scratch);
/// assert_eq!(dropped, 2);
/// # Ok::<(), ember::wordpiece::WordPieceError>(())
/// ```
pub struct WordPieceTokenizer {
    normalization: BertNormalization,
    /// Added tokens matched in the raw text.
    raw_added: Option<AddedTokenMatcher>,
    /// Added tokens matched in each normalised piece.
    normalized_added: Option<AddedTokenMatcher>,
    /// Word-initial pieces.
    initial: PieceTable,
    /// Continuation pieces, keyed without their prefix: `##ing` is found as `ing`, so no
    /// prefixed candidate string is ever built.
    continuation: PieceTable,
    unk_id: u32,
    max_input_chars_per_word: usize,
    prefix_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
    /// Word pieces kept: `max_length − prefix − suffix`.
    max_pieces: usize,
}

impl WordPieceTokenizer {
    /// Builds the piece tables and added-token matchers of `spec`.
    ///
    /// # Errors
    ///
    /// [`WordPieceError::MissingUnkToken`] when `unk_token` is not in the vocabulary,
    /// [`WordPieceError::EmptyAddedToken`] or [`WordPieceError::Matcher`] for added tokens
    /// that cannot be matched.
    pub fn new(spec: &WordPieceSpec) -> Result<Self, WordPieceError> {
        let unk_id = *spec
            .vocab
            .get(&spec.unk_token)
            .ok_or_else(|| WordPieceError::MissingUnkToken(spec.unk_token.clone()))?;
        let initial = PieceTable::new(spec.vocab.iter().map(|(k, &v)| (k.as_str(), v)));
        let prefix = spec.continuing_subword_prefix.as_str();
        let continuation = PieceTable::new(
            spec.vocab
                .iter()
                .filter_map(|(k, &v)| Some((k.strip_prefix(prefix)?, v))),
        );

        let mut scratch = WordPieceScratch::default();
        let mut raw = Vec::new();
        let mut normalized = Vec::new();
        for token in &spec.added_tokens {
            if token.content.is_empty() {
                // The `tokenizers` crate ignores empty added tokens.
                continue;
            }
            if token.normalized {
                normalize_into(spec.normalization, &token.content, &mut scratch);
                if scratch.normalized.is_empty() {
                    return Err(WordPieceError::EmptyAddedToken {
                        content: token.content.clone(),
                    });
                }
                normalized.push((scratch.normalized.clone(), token));
            } else {
                raw.push((token.content.clone(), token));
            }
        }
        let fixed = spec.prefix_ids.len() + spec.suffix_ids.len();
        Ok(Self {
            normalization: spec.normalization,
            raw_added: AddedTokenMatcher::new(&raw)?,
            normalized_added: AddedTokenMatcher::new(&normalized)?,
            initial,
            continuation,
            unk_id,
            max_input_chars_per_word: spec.max_input_chars_per_word,
            prefix_ids: spec.prefix_ids.clone(),
            suffix_ids: spec.suffix_ids.clone(),
            max_pieces: spec.max_length.saturating_sub(fixed),
        })
    }

    /// Tokenizes `text` into `ids` (cleared first): prefix, at most `max_length − 2` word
    /// pieces, suffix. Allocates only while `ids` or `scratch` grow. Stops at the first word
    /// past the limit: a long text costs no more than its first few hundred tokens.
    pub fn encode_into(&self, text: &str, ids: &mut Vec<u32>, scratch: &mut WordPieceScratch) {
        self.encode(text, ids, scratch, false);
    }

    /// [`encode_into`](Self::encode_into) that also counts the word pieces truncation drops,
    /// and returns that count (0 when the text fits). Tokenizes the whole text, so its cost is
    /// linear in the text's length; `ids` still grows only by one word past the limit.
    pub fn encode_into_counting_dropped(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        scratch: &mut WordPieceScratch,
    ) -> usize {
        self.encode(text, ids, scratch, true)
    }

    fn encode(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        scratch: &mut WordPieceScratch,
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
            None => self.encode_piece(text, &mut pieces, scratch),
            Some(matcher) => matcher.split(text, |range, added| {
                match added {
                    Some(id) => pieces.push_word(|ids| ids.push(id)),
                    None => self.encode_piece(&text[range], &mut pieces, scratch),
                }
                !pieces.done()
            }),
        }
        let dropped = pieces.dropped;
        ids.extend_from_slice(&self.suffix_ids);
        dropped
    }

    /// Normalises one stretch of raw text between added tokens and appends its pieces.
    fn encode_piece(&self, raw: &str, pieces: &mut Pieces<'_>, scratch: &mut WordPieceScratch) {
        if pieces.done() {
            return;
        }
        normalize_into(self.normalization, raw, scratch);
        let normalized = scratch.normalized.as_str();
        match &self.normalized_added {
            None => self.encode_words(normalized, pieces),
            Some(matcher) => matcher.split(normalized, |range, added| {
                match added {
                    Some(id) => pieces.push_word(|ids| ids.push(id)),
                    None => self.encode_words(&normalized[range], pieces),
                }
                !pieces.done()
            }),
        }
    }

    /// BertPreTokenizer then WordPiece over normalised text.
    fn encode_words(&self, text: &str, pieces: &mut Pieces<'_>) {
        let mut word_start = 0;
        for (at, c) in text.char_indices() {
            if pieces.done() {
                return;
            }
            let whitespace = c.is_whitespace();
            if whitespace || is_bert_punctuation(c) {
                if word_start < at {
                    pieces.push_word(|ids| self.encode_word(&text[word_start..at], ids));
                }
                let next = at + c.len_utf8();
                if !whitespace && !pieces.done() {
                    pieces.push_word(|ids| self.encode_word(&text[at..next], ids));
                }
                word_start = next;
            }
        }
        if word_start < text.len() && !pieces.done() {
            pieces.push_word(|ids| self.encode_word(&text[word_start..], ids));
        }
    }

    /// WordPiece on one word: greedy longest match first; a word with a part that matches
    /// nothing, or longer than `max_input_chars_per_word` chars, is one `[UNK]`.
    fn encode_word(&self, word: &str, ids: &mut Vec<u32>) {
        if word.chars().nth(self.max_input_chars_per_word).is_some() {
            ids.push(self.unk_id);
            return;
        }
        let word_ids_start = ids.len();
        let mut start = 0;
        while start < word.len() {
            let table = if start == 0 {
                &self.initial
            } else {
                &self.continuation
            };
            // Longer candidates than the longest piece cannot match: start below them.
            let mut end = word.len().min(start + table.longest);
            while !word.is_char_boundary(end) {
                end -= 1;
            }
            let found = loop {
                if end <= start {
                    break None;
                }
                if let Some(&id) = table.ids.get(&word[start..end]) {
                    break Some(id);
                }
                end -= 1;
                while !word.is_char_boundary(end) {
                    end -= 1;
                }
            };
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(word_ids_start);
                    ids.push(self.unk_id);
                    return;
                }
            }
        }
    }
}

/// The ids of one text as words are added: kept up to `limit` (prefix included); past it,
/// either tokenizing stops (`done`) or, with `count_dropped`, the pieces are only counted.
/// Also the BPE path's ([`crate::bpe`]).
pub(crate) struct Pieces<'a> {
    pub(crate) ids: &'a mut Vec<u32>,
    pub(crate) limit: usize,
    pub(crate) count_dropped: bool,
    /// Pieces cut at the limit so far (a lower bound unless `count_dropped`).
    pub(crate) dropped: usize,
}

impl Pieces<'_> {
    /// Whether more text can change nothing the caller asked for.
    pub(crate) fn done(&self) -> bool {
        !self.count_dropped && self.ids.len() >= self.limit
    }

    /// Appends one word's pieces (written by `encode`), then cuts what passes the limit. A
    /// word is whole before it is cut because WordPiece may replace its pieces by `[UNK]`.
    pub(crate) fn push_word(&mut self, encode: impl FnOnce(&mut Vec<u32>)) {
        encode(self.ids);
        if self.ids.len() > self.limit {
            self.dropped += self.ids.len() - self.limit;
            self.ids.truncate(self.limit);
        }
    }
}

/// `char::is_ascii_punctuation` or a Unicode P* category: what BertPreTokenizer isolates.
fn is_bert_punctuation(c: char) -> bool {
    // ASCII first: the Unicode tables are binary searches, and ASCII has no P* char that is
    // not ASCII punctuation.
    c.is_ascii_punctuation() || (!c.is_ascii() && c.is_punctuation())
}

/// BertNormalizer's whitespace: tab, newline, carriage return and Unicode White_Space.
fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// BertNormalizer's control characters: Cc, Cf, Co except tab, newline and carriage return.
fn is_bert_control(c: char) -> bool {
    if c.is_ascii() {
        // ASCII's only "other" characters are its controls (Cc).
        return c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r');
    }
    c.is_other()
}

/// The CJK Unified Ideographs blocks BertNormalizer surrounds with spaces (not Hangul, kana).
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// Normalises `raw` into `scratch.normalized`, with the `tokenizers` crate's steps in its
/// order: `[Lowercase]`, clean_text, handle_chinese_chars, strip_accents (NFD, then drop Mn),
/// lowercase.
///
/// The crate runs each step over the whole string; here each char flows through all steps at
/// once. That is the same thing because every step but NFD maps chars independently, and NFD
/// only reorders runs of non-starters, which [`Normalization`] holds back until the next
/// starter (or the end).
fn normalize_into(n: BertNormalization, raw: &str, scratch: &mut WordPieceScratch) {
    scratch.normalized.clear();
    scratch.pending_marks.clear();
    let mut normalization = Normalization {
        n,
        out: &mut scratch.normalized,
        pending_marks: &mut scratch.pending_marks,
    };
    for c in raw.chars() {
        normalization.push_raw(c);
    }
    normalization.flush_marks();
}

/// One piece's normalisation in flight: each `push_*` method is one step, handing its output
/// to the next.
struct Normalization<'a> {
    n: BertNormalization,
    out: &'a mut String,
    /// Non-starters since the last starter, `(combining class, char)`, awaiting reordering.
    pending_marks: &'a mut Vec<(u8, char)>,
}

impl Normalization<'_> {
    /// A char of the text: the optional `Lowercase` normaliser.
    fn push_raw(&mut self, c: char) {
        if !self.n.lowercase_first {
            self.push_lowered(c);
        } else if c.is_ascii() {
            self.push_lowered(c.to_ascii_lowercase());
        } else {
            for lower in c.to_lowercase() {
                self.push_lowered(lower);
            }
        }
    }

    /// clean_text: drop NUL, U+FFFD and controls, turn whitespace into ' '; then
    /// handle_chinese_chars.
    fn push_lowered(&mut self, c: char) {
        let c = if !self.n.clean_text {
            c
        } else if c == '\0' || c == '\u{FFFD}' || is_bert_control(c) {
            return;
        } else if is_bert_whitespace(c) {
            ' '
        } else {
            c
        };
        if self.n.handle_chinese_chars && is_chinese_char(c) {
            self.push_cleaned(' ');
            self.push_cleaned(c);
            self.push_cleaned(' ');
        } else {
            self.push_cleaned(c);
        }
    }

    /// strip_accents, first half: canonical decomposition.
    fn push_cleaned(&mut self, c: char) {
        if !self.n.strip_accents {
            self.push_unaccented(c);
        } else if c.is_ascii() {
            // ASCII decomposes to itself, a starter.
            self.flush_marks();
            self.push_unaccented(c);
        } else {
            decompose_canonical(c, |d| self.push_decomposed(d));
        }
    }

    /// strip_accents, second half: canonical reordering (a stable sort of each run of
    /// non-starters by combining class), then dropping Mn marks. Marks are dropped only after
    /// reordering, as the crate does, so kept non-starters (Mc, Me) land in the same order.
    fn push_decomposed(&mut self, c: char) {
        let class = canonical_combining_class(c);
        if class == 0 {
            self.flush_marks();
            self.push_reordered(c);
        } else {
            self.pending_marks.push((class, c));
        }
    }

    /// Emits the pending non-starters sorted by combining class, ties in text order.
    fn flush_marks(&mut self) {
        let marks = &mut *self.pending_marks;
        // Insertion sort: stable, in place (`sort_by_key` may allocate), and runs are short.
        for i in 1..marks.len() {
            let mut j = i;
            while j > 0 && marks[j - 1].0 > marks[j].0 {
                marks.swap(j - 1, j);
                j -= 1;
            }
        }
        for i in 0..self.pending_marks.len() {
            let c = self.pending_marks[i].1;
            self.push_reordered(c);
        }
        self.pending_marks.clear();
    }

    fn push_reordered(&mut self, c: char) {
        if c.is_ascii() || !c.is_mark_nonspacing() {
            self.push_unaccented(c);
        }
    }

    /// lowercase.
    fn push_unaccented(&mut self, c: char) {
        if !self.n.lowercase {
            self.out.push(c);
        } else if c.is_ascii() {
            self.out.push(c.to_ascii_lowercase());
        } else {
            self.out.extend(c.to_lowercase());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalization(lowercase: bool) -> BertNormalization {
        BertNormalization {
            lowercase_first: false,
            clean_text: true,
            handle_chinese_chars: true,
            strip_accents: lowercase,
            lowercase,
        }
    }

    fn spec(words: &[&str], normalization: BertNormalization) -> WordPieceSpec {
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
        let vocab: HashMap<String, u32> = specials
            .iter()
            .chain(words)
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as u32))
            .collect();
        WordPieceSpec {
            added_tokens: specials
                .iter()
                .map(|s| AddedTokenSpec {
                    content: s.to_string(),
                    id: vocab[*s],
                    lstrip: false,
                    rstrip: false,
                    normalized: false,
                })
                .collect(),
            vocab,
            unk_token: "[UNK]".into(),
            continuing_subword_prefix: "##".into(),
            max_input_chars_per_word: 100,
            normalization,
            prefix_ids: vec![2],
            suffix_ids: vec![3],
            max_length: 16,
        }
    }

    fn encode(tokenizer: &WordPieceTokenizer, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        tokenizer.encode_into(text, &mut ids, &mut WordPieceScratch::default());
        ids
    }

    #[test]
    fn greedy_longest_match_with_continuations() {
        // ids: 5 un, 6 ##aff, 7 ##able, 8 unaff, 9 ##a, 10 !
        let t = WordPieceTokenizer::new(&spec(
            &["un", "##aff", "##able", "unaff", "##a", "!"],
            normalization(true),
        ))
        .unwrap();
        assert_eq!(encode(&t, "Unaffable!"), [2, 8, 7, 10, 3]);
        // "x" matches nothing: the whole word is one [UNK], punctuation stays separate.
        assert_eq!(encode(&t, "unaffx!"), [2, 1, 10, 3]);
        assert_eq!(encode(&t, ""), [2, 3]);
    }

    #[test]
    fn special_tokens_split_from_raw_text_and_truncation_keeps_the_first_pieces() {
        let t = WordPieceTokenizer::new(&spec(&["a"], normalization(true))).unwrap();
        // The lower-case "[cls]" is no added token: "[", "cls", "]" are three unknown words.
        assert_eq!(encode(&t, "a[MASK]a [cls]"), [2, 5, 4, 5, 1, 1, 1, 3]);
        let long = "a ".repeat(40);
        let ids = encode(&t, &long);
        assert_eq!(ids.len(), 16);
        assert_eq!((ids[0], ids[15]), (2, 3));
    }

    #[test]
    fn counting_keeps_the_same_ids_and_counts_every_dropped_piece() {
        // ids: 5 a, 6 ##a, 7 un, 8 ##b
        let t = WordPieceTokenizer::new(&spec(&["a", "##a", "un", "##b"], normalization(true)))
            .unwrap();
        let mut scratch = WordPieceScratch::default();
        let cases = [
            (String::new(), 0),
            ("a ".repeat(14), 0),
            ("a ".repeat(40), 26),
            // 13 words, then a two-piece word across the limit (one piece kept), then 2 more.
            (format!("{}aa a a", "a ".repeat(13)), 3),
            // Past the limit: a word with an unknown part is one [UNK], an added token one id,
            // "aaa" three pieces (a ##a ##a).
            (format!("{}unbx [MASK] aaa", "a ".repeat(14)), 1 + 1 + 3),
        ];
        for (text, dropped) in cases {
            let mut counted = Vec::new();
            let got = t.encode_into_counting_dropped(&text, &mut counted, &mut scratch);
            assert_eq!(counted, encode(&t, &text), "{text:?}");
            assert_eq!(got, dropped, "{text:?}");
            // The untruncated length, from a tokenizer whose limit does not bind.
            let mut unlimited = spec(&["a", "##a", "un", "##b"], normalization(true));
            unlimited.max_length = usize::MAX;
            let full = encode(&WordPieceTokenizer::new(&unlimited).unwrap(), &text);
            assert_eq!(full.len(), counted.len() + dropped, "{text:?}");
        }
    }

    #[test]
    fn long_words_become_unk() {
        let t = WordPieceTokenizer::new(&spec(&["a", "##a"], normalization(true))).unwrap();
        assert_eq!(encode(&t, &"a".repeat(100)).len(), 16);
        assert_eq!(encode(&t, &"a".repeat(101)), [2, 1, 3]);
    }

    #[test]
    fn accents_strip_after_canonical_reordering() {
        let mut scratch = WordPieceScratch::default();
        normalize_into(
            normalization(true),
            "Ångström Crème\u{0}\u{FFFD}\t中x",
            &mut scratch,
        );
        assert_eq!(scratch.normalized, "angstrom creme  中 x");
        // U+1D165 (Mc, class 216) after U+0301 (Mn, 230) in the text sorts before it.
        normalize_into(normalization(false), "a\u{301}\u{1D165}", &mut scratch);
        assert_eq!(scratch.normalized, "a\u{301}\u{1D165}");
        normalize_into(normalization(true), "a\u{301}\u{1D165}", &mut scratch);
        assert_eq!(scratch.normalized, "a\u{1D165}");
    }

    #[test]
    fn missing_unk_is_an_error() {
        let mut s = spec(&["a"], normalization(true));
        s.unk_token = "<unk>".into();
        assert!(matches!(
            WordPieceTokenizer::new(&s),
            Err(WordPieceError::MissingUnkToken(_))
        ));
    }
}
