//! Ember's own byte-level BPE tokenizer (GPT-2 / RoBERTa / ModernBERT): text → `<s> … </s>`
//! (or `[CLS] … [SEP]`) ids with no heap allocation once its scratch buffers have grown (the
//! `tokenizers` crate allocates a few hundred times per text).
//!
//! It reproduces, id for id, the `tokenizers` 0.22 pipeline these folders describe:
//!
//! ```text
//! raw text ─ added tokens (normalized = false) split out, leftmost-longest
//!   each other piece ─ normalise: none, or a sequence of NFC / Lowercase
//!                    ─ added tokens (normalized = true) split out of the normalised piece
//!   each other piece ─ ByteLevel pre-tokeniser: ' ' prepended if add_prefix_space and the
//!                      piece does not start with one; split by the GPT-2 regex
//!                      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//!   each word        ─ its UTF-8 bytes, one symbol each (the byte → char map of GPT-2 only
//!                      renames them); BPE merges, lowest rank first, leftmost on ties
//! ids ─ truncated to `max_seq_length − specials`, then the post-processor's specials
//! ```
//!
//! The regex is not run: [`split_words`] walks the text once with the match rules written out
//! (the regex always matches at the next char, so there are no gaps). Its character classes
//! `\s`, `\p{L}`, `\p{N}` (and `\w` for `single_word` added tokens) are taken from
//! `regex-syntax`, the parser behind the `fancy-regex` and `regex` crates the `tokenizers`
//! crate matches with, so the tables agree by construction. The merge loop is the crate's own
//! (a min-heap of `(rank, position)` with the same staleness check), over reused buffers; words
//! of up to 32 bytes rescan their pairs instead, which gives the same merges whenever no two
//! tokens share an id ([`BpeTokenizer::merge_short`]). NFC is the crate's
//! (`unicode-normalization-alignments`: its tables, its decompose / reorder / compose steps,
//! here over reused buffers), and is skipped for text its quick check calls normalised (all
//! ASCII text, most other text).
//!
//! Truncation keeps the first tokens, so encoding stops at the first word past
//! `max_seq_length`; [`BpeTokenizer::encode_into_counting_dropped`] reads on to count what is
//! dropped. There is no word cache (the crate keeps one of 10 000 words, which allocates).
//!
//! Which folders qualify is decided in [`crate::tokenize`]; everything else runs on the
//! `tokenizers` crate.

use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};
use unicode_normalization_alignments::char::{
    canonical_combining_class, compose, decompose_canonical,
};
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized};

use crate::wordpiece::{FxHasher, Pieces};

/// Why a tokenizer description cannot be built into a [`BpeTokenizer`].
#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    /// A merge names a token (a part, or the merged result) that is not in the vocabulary.
    #[error("merge {rank} ({left:?} {right:?}): {missing:?} is not in the vocabulary")]
    MergeTokenMissing {
        /// The merge's index in the merges list.
        rank: usize,
        /// Left part.
        left: String,
        /// Right part.
        right: String,
        /// The token that is missing.
        missing: String,
    },
    /// The unknown token is set, some byte is not in the vocabulary, and neither is the
    /// unknown token: the crate errs on every text with that byte.
    #[error("the unknown token {0:?} is not in the vocabulary")]
    MissingUnkToken(String),
    /// A `normalized` added token becomes the empty string once normalised.
    #[error("added token {content:?} normalises to an empty string")]
    EmptyAddedToken {
        /// The added token's content as given.
        content: String,
    },
    /// The added tokens could not be built into one matcher (too many, or too long).
    #[error("cannot build the added-token matcher: {0}")]
    Matcher(#[from] aho_corasick::BuildError),
}

/// One normaliser of a `Sequence` (or the only one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormalizerStep {
    /// Unicode NFC (canonical decomposition, then composition).
    Nfc,
    /// `char::to_lowercase` on every char.
    Lowercase,
}

/// A token from `tokenizer.json`'s `added_tokens`, matched in the text before BPE runs (and
/// before Unigram runs: [`crate::unigram`] shares it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpeAddedToken {
    /// The token's text, e.g. `<mask>`.
    pub content: String,
    /// The id it encodes to.
    pub id: u32,
    /// Swallow the whitespace to its left (RoBERTa's `<mask>`: `"a <mask>"` → `a`, `<mask>`).
    pub lstrip: bool,
    /// Swallow the whitespace to its right.
    pub rstrip: bool,
    /// Match only where no word character (`\w`) touches it on either side.
    pub single_word: bool,
    /// Matched in the normalised text (its content normalised too) rather than the raw text.
    pub normalized: bool,
}

/// Everything that defines a byte-level BPE pipeline.
#[derive(Clone, Debug)]
pub struct BpeSpec {
    /// Token → id, over the byte-level alphabet (`Ġ` for a space byte, …).
    pub vocab: HashMap<String, u32>,
    /// The merges, highest priority first (the order of `tokenizer.json`).
    pub merges: Vec<(String, String)>,
    /// The token for a byte whose char is not in the vocabulary; `None`: such bytes are
    /// dropped (as the crate does).
    pub unk_token: Option<String>,
    /// Consecutive unknown bytes become one unknown token.
    pub fuse_unk: bool,
    /// A word that is in the vocabulary whole is that one token, whatever the merges say.
    pub ignore_merges: bool,
    /// How each piece of text between added tokens is normalised, in order (and the contents
    /// of `normalized` added tokens).
    pub normalizer: Vec<NormalizerStep>,
    /// The ByteLevel pre-tokeniser's `add_prefix_space`.
    pub add_prefix_space: bool,
    /// Tokens split out of the text before BPE runs, matched leftmost-longest.
    pub added_tokens: Vec<BpeAddedToken>,
    /// Ids before the BPE tokens (`<s>`).
    pub prefix_ids: Vec<u32>,
    /// Ids after the BPE tokens (`</s>`).
    pub suffix_ids: Vec<u32>,
    /// Most ids in one encoding, prefix and suffix included (`max_seq_length`).
    pub max_length: usize,
}

/// Reusable buffers for [`BpeTokenizer::encode_into`]: they grow to the longest text (and
/// word) seen and are then reused, so steady-state encoding allocates nothing.
#[derive(Debug, Default)]
pub struct BpeScratch {
    /// The normaliser's buffers.
    normalized: NormalizeScratch,
    /// A piece with the prefix space prepended.
    prefixed: String,
    /// One word's symbols during merging.
    symbols: Vec<Symbol>,
    /// The merge queue's storage.
    queue: Vec<Merge>,
    /// Short words: each adjacent pair's `(rank, merged id)`.
    pairs: Vec<(u32, u32)>,
    /// One word in the byte-level alphabet (`ignore_merges` looks it up whole).
    mapped: String,
}

impl BpeScratch {
    /// Room for texts of up to `text_bytes` bytes and words of up to
    /// [`WORD_RESERVE`](crate::wordpiece::WORD_RESERVE), so that none of them grows it.
    pub(crate) fn reserve(&mut self, text_bytes: usize) {
        use crate::wordpiece::WORD_RESERVE;
        self.normalized.reserve(text_bytes);
        self.prefixed.reserve(WORD_RESERVE);
        self.mapped.reserve(2 * WORD_RESERVE);
        self.symbols.reserve(WORD_RESERVE);
        self.queue.reserve(WORD_RESERVE);
        self.pairs.reserve(WORD_RESERVE);
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// A symbol of a word being merged: the crate's `Symbol`. `len == 0` marks one merged away.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    id: u32,
    prev: i32,
    next: i32,
    len: u32,
}

/// A queued merge of the symbol at `pos` with its right neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Merge {
    pos: u32,
    rank: u32,
    new_id: u32,
}

impl Ord for Merge {
    /// Reversed, so that `BinaryHeap` pops the lowest rank, then the leftmost position. Equal
    /// `(rank, pos)` means the same pair, so the same `new_id`: the pop order is fully
    /// determined, whatever the heap's shape (the crate's is 4-ary).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The GPT-2 regex's view of a char.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CharClass {
    /// `\s`: White_Space.
    Space,
    /// `\p{L}`.
    Letter,
    /// `\p{N}`.
    Number,
    /// Anything else: `[^\s\p{L}\p{N}]`.
    Other,
}

/// `\s`, `\p{L}`, `\p{N}` and `\w` as `regex-syntax` defines them. Also the Unigram path's
/// ([`crate::unigram`]), for added tokens.
pub(crate) struct CharTables {
    ascii: [CharClass; 128],
    ascii_word: [bool; 128],
    /// Non-overlapping, sorted `(first, last, class)` for `\s`, `\p{L}`, `\p{N}`.
    classes: Vec<(u32, u32, CharClass)>,
    /// Sorted `(first, last)` ranges of `\w`.
    word: Vec<(u32, u32)>,
}

fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    // The patterns are fixed and valid: failing here would be a build of regex-syntax without
    // its Unicode tables, which Cargo.toml rules out.
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .expect("regex-syntax parses a fixed Unicode class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => unreachable!("{pattern} parsed to {other:?}, not a Unicode class"),
    }
}

pub(crate) fn char_tables() -> &'static CharTables {
    static TABLES: OnceLock<CharTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut classes = Vec::new();
        for (pattern, class) in [
            (r"\s", CharClass::Space),
            (r"\p{L}", CharClass::Letter),
            (r"\p{N}", CharClass::Number),
        ] {
            classes.extend(
                class_ranges(pattern)
                    .into_iter()
                    .map(|(a, b)| (a, b, class)),
            );
        }
        classes.sort_unstable_by_key(|&(a, _, _)| a);
        let word = class_ranges(r"\w");
        let lookup = |c: u32| {
            classes
                .iter()
                .find(|&&(a, b, _)| a <= c && c <= b)
                .map_or(CharClass::Other, |&(_, _, class)| class)
        };
        let mut ascii = [CharClass::Other; 128];
        let mut ascii_word = [false; 128];
        for c in 0..128u32 {
            ascii[c as usize] = lookup(c);
            ascii_word[c as usize] = word.iter().any(|&(a, b)| a <= c && c <= b);
        }
        CharTables {
            ascii,
            ascii_word,
            classes,
            word,
        }
    })
}

impl CharTables {
    #[inline]
    fn class(&self, c: char) -> CharClass {
        let c = c as u32;
        if c < 128 {
            return self.ascii[c as usize];
        }
        let i = self.classes.partition_point(|&(a, _, _)| a <= c);
        match i.checked_sub(1).map(|i| self.classes[i]) {
            Some((_, b, class)) if c <= b => class,
            _ => CharClass::Other,
        }
    }

    #[inline]
    fn is_space(&self, c: char) -> bool {
        self.class(c) == CharClass::Space
    }

    fn is_word(&self, c: char) -> bool {
        let c = c as u32;
        if c < 128 {
            return self.ascii_word[c as usize];
        }
        let i = self.word.partition_point(|&(a, _)| a <= c);
        i.checked_sub(1).is_some_and(|i| c <= self.word[i].1)
    }
}

/// Splits `text` into the GPT-2 regex's matches, in order, calling `on_word` with each
/// (never empty; together they cover `text`). Stops when `on_word` returns false.
///
/// At each position the regex's alternatives are tried in order: a contraction (`'s`, `'t`,
/// `'re`, `'ve`, `'m`, `'ll`, `'d`, case-sensitive); an optional `' '` then a run of letters,
/// of numbers, or of other chars (neither space, letter nor number); a whitespace run not
/// followed by a non-space (so before a word, all but its last char: that one goes with the
/// word when it is `' '`); any whitespace run.
fn split_words<'t>(tables: &CharTables, text: &'t str, mut on_word: impl FnMut(&'t str) -> bool) {
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < text.len() {
        let rest = &text[start..];
        let end = if bytes[start] == b'\'' {
            contraction_len(&bytes[start + 1..]).map(|len| start + 1 + len)
        } else {
            None
        };
        let end = end.unwrap_or_else(|| {
            let mut chars = rest.chars();
            // `rest` is not empty.
            let first = chars.next().unwrap_or(' ');
            let class = tables.class(first);
            // ` ?X+`: a space takes the run of the class after it, unless that is whitespace.
            if first == ' ' {
                if let Some(second) = chars.next() {
                    let second_class = tables.class(second);
                    if second_class != CharClass::Space {
                        return start + 1 + run_len(tables, &rest[1..], second_class);
                    }
                }
            }
            let run = run_len(tables, rest, class);
            if class != CharClass::Space || start + run == text.len() {
                return start + run;
            }
            // `\s+(?!\S)` backs off one char before the non-space; a lone whitespace char
            // before a non-space is `\s+`.
            let last = rest[..run].chars().next_back().map_or(0, char::len_utf8);
            if run > last {
                start + run - last
            } else {
                start + run
            }
        });
        if !on_word(&text[start..end]) {
            return;
        }
        start = end;
    }
}

/// The length of a contraction suffix (`s`, `t`, `re`, `ve`, `m`, `ll`, `d`) at the start of
/// `after` (the bytes after an apostrophe).
#[inline]
fn contraction_len(after: &[u8]) -> Option<usize> {
    match after {
        [b's' | b't' | b'm' | b'd', ..] => Some(1),
        [b'r' | b'v', b'e', ..] | [b'l', b'l', ..] => Some(2),
        _ => None,
    }
}

/// Bytes of the run of chars of `class` at the start of `text`.
#[inline]
fn run_len(tables: &CharTables, text: &str, class: CharClass) -> usize {
    let bytes = text.as_bytes();
    let mut at = 0;
    // ASCII fast path, then chars.
    while at < bytes.len() {
        let b = bytes[at];
        if b < 128 {
            if tables.ascii[b as usize] != class {
                return at;
            }
            at += 1;
        } else {
            let c = text[at..].chars().next().unwrap_or(' ');
            if tables.class(c) != class {
                return at;
            }
            at += c.len_utf8();
        }
    }
    at
}

/// GPT-2's byte → char map: printable Latin-1 bytes map to themselves, the others to
/// U+0100 upwards, in byte order.
fn byte_to_char() -> [char; 256] {
    let mut map = [' '; 256];
    let mut next = 0x100u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        map[b as usize] = char::from_u32(code).unwrap_or(' ');
    }
    map
}

/// An added-token search over raw or normalised text. Also the Unigram path's
/// ([`crate::unigram`]).
pub(crate) struct AddedTokenMatcher {
    automaton: AhoCorasick,
    /// Per pattern: the token's id and flags.
    tokens: Vec<BpeAddedToken>,
}

impl AddedTokenMatcher {
    /// `None` when there is nothing to match.
    pub(crate) fn new(
        patterns: Vec<(String, BpeAddedToken)>,
    ) -> Result<Option<Self>, aho_corasick::BuildError> {
        if patterns.is_empty() {
            return Ok(None);
        }
        // The `tokenizers` crate's own settings: leftmost-longest.
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|(pattern, _)| pattern))?;
        let tokens = patterns.into_iter().map(|(_, token)| token).collect();
        Ok(Some(Self { automaton, tokens }))
    }

    /// Calls `on_split(range, Some(id))` for each added token in `text` and
    /// `on_split(range, None)` for each non-empty stretch between them, in order, exactly as
    /// the `tokenizers` crate's `AddedVocabulary::find_matches` splits. Stops when `on_split`
    /// returns false.
    pub(crate) fn split(
        &self,
        tables: &CharTables,
        text: &str,
        mut on_split: impl FnMut(std::ops::Range<usize>, Option<u32>) -> bool,
    ) {
        let mut done = 0;
        for found in self.automaton.find_iter(text) {
            let token = &self.tokens[found.pattern().as_usize()];
            let (mut start, mut stop) = (found.start(), found.end());
            if token.single_word {
                let word_before = text[..start]
                    .chars()
                    .next_back()
                    .is_some_and(|c| tables.is_word(c));
                let word_after = text[stop..]
                    .chars()
                    .next()
                    .is_some_and(|c| tables.is_word(c));
                if word_before || word_after {
                    continue;
                }
            }
            if token.lstrip {
                let trimmed = text[..start].trim_end_matches(|c| tables.is_space(c)).len();
                start = trimmed.max(done);
            }
            if token.rstrip {
                let rest = &text[stop..];
                stop += rest.len() - rest.trim_start_matches(|c| tables.is_space(c)).len();
            }
            if done < start && !on_split(done..start, None) {
                return;
            }
            if !on_split(start..stop, Some(token.id)) {
                return;
            }
            done = stop;
        }
        if done < text.len() {
            on_split(done..text.len(), None);
        }
    }
}

/// A byte-level BPE tokenizer that reuses caller-owned buffers.
pub struct BpeTokenizer {
    tables: &'static CharTables,
    normalizer: Vec<NormalizerStep>,
    /// Added tokens matched in the raw text.
    raw_added: Option<AddedTokenMatcher>,
    /// Added tokens matched in each normalised piece.
    normalized_added: Option<AddedTokenMatcher>,
    add_prefix_space: bool,
    /// Each byte's symbol: the id of its byte-level char, `None` if not in the vocabulary.
    byte_ids: Box<[Option<u32>; 256]>,
    /// Each byte's char in the byte-level alphabet.
    byte_chars: Box<[char; 256]>,
    /// `(left id, right id)` → `(rank, merged id)`, keyed `left << 32 | right`.
    merges: HashMap<u64, (u32, u32), FxBuild>,
    /// Every id has one token: the crate's merge loop is then the plain "merge the leftmost
    /// lowest-rank pair" that [`BpeTokenizer::merge_short`] runs (see there).
    injective: bool,
    /// Whole words, for `ignore_merges`.
    vocab: Option<HashMap<Box<str>, u32, FxBuild>>,
    unk_id: Option<u32>,
    fuse_unk: bool,
    prefix_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
    /// BPE tokens kept: `max_length − prefix − suffix`.
    max_pieces: usize,
}

impl BpeTokenizer {
    /// Builds the merge table and added-token matchers of `spec`.
    ///
    /// # Errors
    ///
    /// [`BpeError::MergeTokenMissing`] for a merge over tokens outside the vocabulary,
    /// [`BpeError::MissingUnkToken`], [`BpeError::EmptyAddedToken`] or
    /// [`BpeError::Matcher`] for added tokens that cannot be matched.
    pub fn new(spec: &BpeSpec) -> Result<Self, BpeError> {
        let tables = char_tables();
        let byte_chars = byte_to_char();
        let mut byte_ids = [None; 256];
        let mut buffer = [0u8; 4];
        for (id, c) in byte_ids.iter_mut().zip(byte_chars) {
            *id = spec.vocab.get(&*c.encode_utf8(&mut buffer)).copied();
        }
        let unk_id = match &spec.unk_token {
            None => None,
            Some(unk) => match spec.vocab.get(unk) {
                Some(&id) => Some(id),
                // Never looked up while every byte has a symbol.
                None if byte_ids.iter().all(Option::is_some) => None,
                None => return Err(BpeError::MissingUnkToken(unk.clone())),
            },
        };

        let mut merges = HashMap::with_capacity_and_hasher(spec.merges.len(), FxBuild::default());
        let mut joined = String::new();
        for (rank, (left, right)) in spec.merges.iter().enumerate() {
            let missing = |missing: &str| BpeError::MergeTokenMissing {
                rank,
                left: left.clone(),
                right: right.clone(),
                missing: missing.to_owned(),
            };
            let left_id = *spec.vocab.get(left).ok_or_else(|| missing(left))?;
            let right_id = *spec.vocab.get(right).ok_or_else(|| missing(right))?;
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let new_id = *spec.vocab.get(&joined).ok_or_else(|| missing(&joined))?;
            // A repeated pair keeps its last rank, as in the crate's map.
            merges.insert(
                (u64::from(left_id) << 32) | u64::from(right_id),
                (rank as u32, new_id),
            );
        }
        let mut ids: Vec<u32> = spec.vocab.values().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let injective = ids.len() == spec.vocab.len();
        let vocab = spec.ignore_merges.then(|| {
            spec.vocab
                .iter()
                .map(|(token, &id)| (token.as_str().into(), id))
                .collect()
        });

        let mut scratch = BpeScratch::default();
        let mut raw = Vec::new();
        let mut normalized = Vec::new();
        for token in &spec.added_tokens {
            if token.content.is_empty() {
                // The `tokenizers` crate ignores empty added tokens.
                continue;
            }
            if token.normalized {
                let pattern = normalize(&spec.normalizer, &token.content, &mut scratch.normalized);
                if pattern.is_empty() {
                    return Err(BpeError::EmptyAddedToken {
                        content: token.content.clone(),
                    });
                }
                normalized.push((pattern.to_owned(), token.clone()));
            } else {
                raw.push((token.content.clone(), token.clone()));
            }
        }
        let fixed = spec.prefix_ids.len() + spec.suffix_ids.len();
        Ok(Self {
            tables,
            normalizer: spec.normalizer.clone(),
            raw_added: AddedTokenMatcher::new(raw)?,
            normalized_added: AddedTokenMatcher::new(normalized)?,
            add_prefix_space: spec.add_prefix_space,
            byte_ids: Box::new(byte_ids),
            byte_chars: Box::new(byte_chars),
            merges,
            injective,
            vocab,
            unk_id,
            fuse_unk: spec.fuse_unk,
            prefix_ids: spec.prefix_ids.clone(),
            suffix_ids: spec.suffix_ids.clone(),
            max_pieces: spec.max_length.saturating_sub(fixed),
        })
    }

    /// Tokenizes `text` into `ids` (cleared first): prefix, at most `max_length − specials`
    /// BPE tokens, suffix. Allocates only while `ids` or `scratch` grow. Stops at the first
    /// word past the limit: a long text costs no more than its first few hundred tokens.
    pub fn encode_into(&self, text: &str, ids: &mut Vec<u32>, scratch: &mut BpeScratch) {
        self.encode(text, ids, scratch, false);
    }

    /// [`encode_into`](Self::encode_into) that also counts the tokens truncation drops, and
    /// returns that count (0 when the text fits). Tokenizes the whole text, so its cost is
    /// linear in its length; `ids` still grows only by one word past the limit.
    pub fn encode_into_counting_dropped(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        scratch: &mut BpeScratch,
    ) -> usize {
        self.encode(text, ids, scratch, true)
    }

    fn encode(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        scratch: &mut BpeScratch,
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
            Some(matcher) => matcher.split(self.tables, text, |range, added| {
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

    /// Normalises one stretch of raw text between added tokens and appends its tokens.
    fn encode_piece(&self, raw: &str, pieces: &mut Pieces<'_>, scratch: &mut BpeScratch) {
        if pieces.done() {
            return;
        }
        let BpeScratch {
            normalized,
            prefixed,
            symbols,
            queue,
            pairs,
            mapped,
        } = scratch;
        let mut words = WordScratch {
            symbols,
            queue,
            pairs,
            mapped,
        };
        let text = normalize(&self.normalizer, raw, normalized);
        match &self.normalized_added {
            None => self.encode_words(text, pieces, prefixed, &mut words),
            Some(matcher) => matcher.split(self.tables, text, |range, added| {
                match added {
                    Some(id) => pieces.push_word(|ids| ids.push(id)),
                    None => self.encode_words(&text[range], pieces, prefixed, &mut words),
                }
                !pieces.done()
            }),
        }
    }

    /// The ByteLevel pre-tokeniser then BPE over one normalised piece; an empty piece (an
    /// empty text, when no added-token split comes first) gives nothing, as the crate drops
    /// empty splits before the prefix space would be added.
    fn encode_words(
        &self,
        text: &str,
        pieces: &mut Pieces<'_>,
        prefixed: &mut String,
        words: &mut WordScratch<'_>,
    ) {
        if text.is_empty() {
            return;
        }
        let text = if self.add_prefix_space && !text.starts_with(' ') {
            prefixed.clear();
            prefixed.push(' ');
            prefixed.push_str(text);
            prefixed.as_str()
        } else {
            text
        };
        split_words(self.tables, text, |word| {
            pieces.push_word(|ids| self.encode_word(word.as_bytes(), ids, words));
            !pieces.done()
        });
    }

    /// BPE on one word's bytes: the crate's `BPE::merge_word` then `Word::merge_all`.
    fn encode_word(&self, word: &[u8], ids: &mut Vec<u32>, scratch: &mut WordScratch<'_>) {
        if let Some(vocab) = &self.vocab {
            scratch.mapped.clear();
            scratch
                .mapped
                .extend(word.iter().map(|&b| self.byte_chars[b as usize]));
            if let Some(&id) = vocab.get(scratch.mapped.as_str()) {
                ids.push(id);
                return;
            }
        }
        let symbols = &mut *scratch.symbols;
        symbols.clear();
        // Symbols: one per byte (its char is 1 or 2 bytes long in the byte-level alphabet,
        // which only matters for telling merged-away symbols, len 0, apart).
        let mut unk: Option<(u32, u32)> = None;
        let add = |symbols: &mut Vec<Symbol>, id: u32, len: u32| {
            let at = symbols.len() as i32;
            if let Some(last) = symbols.last_mut() {
                last.next = at;
            }
            symbols.push(Symbol {
                id,
                prev: at - 1,
                next: -1,
                len,
            });
        };
        for &b in word {
            let len = self.byte_chars[b as usize].len_utf8() as u32;
            match self.byte_ids[b as usize] {
                Some(id) => {
                    if let Some((unk_id, unk_len)) = unk.take() {
                        add(symbols, unk_id, unk_len);
                    }
                    add(symbols, id, len);
                }
                None => {
                    if let Some(unk_id) = self.unk_id {
                        unk = match unk {
                            Some((id, unk_len)) if self.fuse_unk => Some((id, unk_len + len)),
                            Some((id, unk_len)) => {
                                add(symbols, id, unk_len);
                                Some((unk_id, len))
                            }
                            None => Some((unk_id, len)),
                        };
                    }
                }
            }
        }
        if let Some((unk_id, unk_len)) = unk {
            add(symbols, unk_id, unk_len);
        }
        if self.injective && symbols.len() <= SHORT_WORD {
            self.merge_short(symbols, scratch.pairs);
        } else {
            self.merge_all(symbols, scratch.queue);
        }
        ids.extend(symbols.iter().filter(|s| s.len != 0).map(|s| s.id));
    }

    /// BPE on a short word by rescanning its pairs: merge the leftmost lowest-rank pair until
    /// none is a merge. Without the heap this is about twice as fast on words of a few symbols.
    ///
    /// It is the crate's `merge_all` when no two tokens share an id: that loop pops queued
    /// `(rank, pos)` entries, lowest first, and skips an entry once the pair at `pos` changed,
    /// recognising it by the merged id. A changed pair spans more text from `pos` (symbols only
    /// grow), so it merges into a longer token, which has another id: every stale entry is
    /// skipped, and each merge done is the lowest-rank, leftmost pair present.
    fn merge_short(&self, symbols: &mut Vec<Symbol>, pairs: &mut Vec<(u32, u32)>) {
        const NONE: (u32, u32) = (u32::MAX, 0);
        pairs.clear();
        pairs.extend(
            symbols
                .windows(2)
                .map(|pair| self.merge_of(pair[0].id, pair[1].id).unwrap_or(NONE)),
        );
        loop {
            let mut best = None;
            let mut best_rank = u32::MAX;
            for (i, &(rank, _)) in pairs.iter().enumerate() {
                if rank < best_rank {
                    best_rank = rank;
                    best = Some(i);
                }
            }
            let Some(i) = best else {
                return;
            };
            symbols[i].id = pairs[i].1;
            symbols.remove(i + 1);
            pairs.remove(i);
            if i > 0 {
                pairs[i - 1] = self
                    .merge_of(symbols[i - 1].id, symbols[i].id)
                    .unwrap_or(NONE);
            }
            if i < pairs.len() {
                pairs[i] = self
                    .merge_of(symbols[i].id, symbols[i + 1].id)
                    .unwrap_or(NONE);
            }
        }
    }

    #[inline]
    fn merge_of(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.merges
            .get(&((u64::from(left) << 32) | u64::from(right)))
            .copied()
    }

    /// The crate's `Word::merge_all` without dropout: pop the lowest `(rank, pos)`, skip it if
    /// stale, merge, queue the new pairs on either side.
    fn merge_all(&self, symbols: &mut [Symbol], queue_storage: &mut Vec<Merge>) {
        queue_storage.clear();
        for (pos, pair) in symbols.windows(2).enumerate() {
            if let Some((rank, new_id)) = self.merge_of(pair[0].id, pair[1].id) {
                queue_storage.push(Merge {
                    pos: pos as u32,
                    rank,
                    new_id,
                });
            }
        }
        let mut queue = BinaryHeap::from(std::mem::take(queue_storage));
        while let Some(top) = queue.pop() {
            let pos = top.pos as usize;
            if symbols[pos].len == 0 || symbols[pos].next == -1 {
                continue;
            }
            let next_pos = symbols[pos].next as usize;
            let right = symbols[next_pos];
            // An entry queued before a neighbour changed.
            if self
                .merge_of(symbols[pos].id, right.id)
                .is_none_or(|(_, new_id)| new_id != top.new_id)
            {
                continue;
            }
            symbols[pos].id = top.new_id;
            symbols[pos].len += right.len;
            symbols[pos].next = right.next;
            symbols[next_pos].len = 0;
            if right.next > -1 && (right.next as usize) < symbols.len() {
                symbols[right.next as usize].prev = pos as i32;
            }
            let current = symbols[pos];
            if current.prev >= 0 {
                let prev = symbols[current.prev as usize];
                if let Some((rank, new_id)) = self.merge_of(prev.id, current.id) {
                    queue.push(Merge {
                        pos: current.prev as u32,
                        rank,
                        new_id,
                    });
                }
            }
            if current.next >= 0 && (current.next as usize) < symbols.len() {
                let next = symbols[current.next as usize];
                if let Some((rank, new_id)) = self.merge_of(current.id, next.id) {
                    queue.push(Merge {
                        pos: top.pos,
                        rank,
                        new_id,
                    });
                }
            }
        }
        *queue_storage = queue.into_vec();
    }
}

/// Words of at most this many symbols take [`BpeTokenizer::merge_short`], longer ones the
/// heap (quadratic against `n log n`).
const SHORT_WORD: usize = 32;

/// The per-word buffers, borrowed out of [`BpeScratch`] while the normalised piece is.
struct WordScratch<'a> {
    symbols: &'a mut Vec<Symbol>,
    queue: &'a mut Vec<Merge>,
    pairs: &'a mut Vec<(u32, u32)>,
    mapped: &'a mut String,
}

/// Buffers of [`normalize`].
#[derive(Debug, Default)]
struct NormalizeScratch {
    /// The normalised text, and the other half of a two-step normaliser.
    text: String,
    other: String,
    /// NFC: the canonical decomposition, `(combining class, char)`.
    decomposed: Vec<(u8, char)>,
    /// NFC: marks that did not compose, held until the next starter.
    uncomposed: Vec<char>,
}

impl NormalizeScratch {
    fn reserve(&mut self, text_bytes: usize) {
        self.text.reserve(text_bytes);
        self.other.reserve(text_bytes);
        self.decomposed.reserve(crate::wordpiece::WORD_RESERVE);
        self.uncomposed.reserve(crate::wordpiece::WORD_RESERVE);
    }
}

/// Normalises `raw` by `steps`: `raw` itself when they change nothing, else a buffer of
/// `scratch`.
fn normalize<'a>(
    steps: &[NormalizerStep],
    raw: &'a str,
    scratch: &'a mut NormalizeScratch,
) -> &'a str {
    // NFC of NFC text is itself; the quick check says "yes" for all of ASCII and for most
    // text, without allocating.
    let unchanged = steps.iter().all(|&step| step == NormalizerStep::Nfc)
        && (steps.is_empty() || is_nfc_quick(raw.chars()) == IsNormalized::Yes);
    if unchanged {
        return raw;
    }
    let NormalizeScratch {
        text,
        other,
        decomposed,
        uncomposed,
    } = scratch;
    text.clear();
    text.push_str(raw);
    for &step in steps {
        match step {
            NormalizerStep::Nfc => {
                if is_nfc_quick(text.chars()) == IsNormalized::Yes {
                    continue;
                }
                nfc_into(text, other, decomposed, uncomposed);
            }
            NormalizerStep::Lowercase => {
                other.clear();
                for c in text.chars() {
                    if c.is_ascii() {
                        other.push(c.to_ascii_lowercase());
                    } else {
                        other.extend(c.to_lowercase());
                    }
                }
            }
        }
        std::mem::swap(text, other);
    }
    text.as_str()
}

/// NFC of `text` into `out`, over reused buffers: the `unicode-normalization-alignments`
/// iterators the crate runs (`Decompositions`, then `Recompositions`), whose inline buffers
/// hold 4 chars and spill to the heap past that, with the same steps.
fn nfc_into(
    text: &str,
    out: &mut String,
    decomposed: &mut Vec<(u8, char)>,
    uncomposed: &mut Vec<char>,
) {
    // Canonical decomposition, each run of non-starters stably sorted by combining class.
    decomposed.clear();
    let mut run_start = 0;
    for c in text.chars() {
        decompose_canonical(c, |d| {
            let class = canonical_combining_class(d);
            if class == 0 {
                sort_by_class(&mut decomposed[run_start..]);
                run_start = decomposed.len() + 1;
            }
            decomposed.push((class, d));
        });
    }
    let run_start = run_start.min(decomposed.len());
    sort_by_class(&mut decomposed[run_start..]);

    // Canonical composition, as `Recompositions::next` does it: `composee` is the last
    // starter, `last_class` the class of the last mark held back in `uncomposed`.
    out.clear();
    uncomposed.clear();
    let mut composee: Option<char> = None;
    let mut last_class: Option<u8> = None;
    for &(class, c) in decomposed.iter() {
        let Some(starter) = composee else {
            if class == 0 {
                composee = Some(c);
            } else {
                out.push(c);
            }
            continue;
        };
        match last_class {
            None => match compose(starter, c) {
                Some(composed) => composee = Some(composed),
                None if class == 0 => {
                    out.push(starter);
                    composee = Some(c);
                }
                None => {
                    uncomposed.push(c);
                    last_class = Some(class);
                }
            },
            Some(last) if last >= class => {
                // Blocked from the starter.
                if class == 0 {
                    out.push(starter);
                    out.extend(uncomposed.drain(..));
                    composee = Some(c);
                    last_class = None;
                } else {
                    uncomposed.push(c);
                    last_class = Some(class);
                }
            }
            Some(_) => match compose(starter, c) {
                Some(composed) => composee = Some(composed),
                None => {
                    uncomposed.push(c);
                    last_class = Some(class);
                }
            },
        }
    }
    out.extend(composee);
    out.extend(uncomposed.drain(..));
}

/// Stable sort by combining class, in place (`sort_by_key` may allocate); runs are short.
fn sort_by_class(marks: &mut [(u8, char)]) {
    for i in 1..marks.len() {
        let mut j = i;
        while j > 0 && marks[j - 1].0 > marks[j].0 {
            marks.swap(j - 1, j);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_normalization_alignments::UnicodeNormalization;

    fn words(text: &str) -> Vec<&str> {
        let mut words = Vec::new();
        split_words(char_tables(), text, |word| {
            words.push(word);
            true
        });
        words
    }

    #[test]
    fn splits_as_the_gpt2_regex() {
        assert_eq!(
            words("Hello world's  end"),
            ["Hello", " world", "'s", " ", " end"]
        );
        // Contractions are lower-case ASCII only; a space takes the run after it.
        assert_eq!(
            words("IT'S it’s 's"),
            ["IT", "'", "S", " it", "’", "s", " '", "s"]
        );
        assert_eq!(words("we'll've"), ["we", "'ll", "'ve"]);
        // Whitespace: all but the last char before a word, all of it at the end; a lone
        // non-space whitespace char is its own word.
        assert_eq!(words("a \t\n b  "), ["a", " \t\n", " b", "  "]);
        assert_eq!(words("a\nb\u{3000}c"), ["a", "\n", "b", "\u{3000}", "c"]);
        assert_eq!(
            words("x 123 ½Ⅻ٣ e\u{301}!?"),
            ["x", " 123", " ½Ⅻ٣", " e", "\u{301}!?"]
        );
        assert_eq!(words(""), [] as [&str; 0]);
    }

    #[test]
    fn nfc_matches_the_crate_iterators() {
        let pieces = [
            "a",
            "e\u{301}",
            "\u{301}",
            "\u{327}",
            "\u{316}",
            "\u{1D165}",
            "\u{212B}",
            "\u{1100}",
            "\u{1161}",
            "\u{11A8}",
            "한",
            "Å",
            "ẞ",
            "\u{0F73}",
            "\u{0344}",
            "\u{FB2C}",
            "\u{05B7}",
            "\u{0308}",
            "u",
            "\u{0345}",
            "\u{3099}",
            "か",
            " ",
            "\u{1F3FD}",
        ];
        let (mut out, mut decomposed, mut uncomposed) = (String::new(), Vec::new(), Vec::new());
        let mut state = 7u64;
        for _ in 0..20_000 {
            let mut text = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bits = state;
            for _ in 0..(bits % 12) {
                bits /= 12;
                text.push_str(pieces[(bits % pieces.len() as u64) as usize]);
                bits /= pieces.len() as u64;
            }
            nfc_into(&text, &mut out, &mut decomposed, &mut uncomposed);
            let expected: String = text.as_str().nfc().map(|(c, _)| c).collect();
            assert_eq!(out, expected, "{text:?}");
            // `normalize` skips text the quick check passes: NFC must not change it.
            if is_nfc_quick(text.chars()) == IsNormalized::Yes {
                assert_eq!(expected, text, "{text:?}");
            }
        }
    }

    #[test]
    fn nfc_text_is_not_copied() {
        let mut scratch = NormalizeScratch::default();
        let raw = "plain ASCII, and café";
        let normalized = normalize(&[NormalizerStep::Nfc], raw, &mut scratch);
        assert!(std::ptr::eq(normalized, raw));
        assert_eq!(
            normalize(&[NormalizerStep::Nfc], "cafe\u{301}", &mut scratch),
            "café"
        );
    }

    fn spec(merges: &[(&str, &str)]) -> BpeSpec {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        for b in 0..=255u8 {
            let c = byte_to_char()[b as usize];
            let next = vocab.len() as u32;
            vocab.insert(c.to_string(), next);
        }
        for (a, b) in merges {
            let next = vocab.len() as u32;
            vocab.entry(format!("{a}{b}")).or_insert(next);
        }
        BpeSpec {
            vocab,
            merges: merges
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            unk_token: None,
            fuse_unk: false,
            ignore_merges: false,
            normalizer: Vec::new(),
            add_prefix_space: false,
            added_tokens: Vec::new(),
            prefix_ids: vec![1000],
            suffix_ids: vec![1001],
            max_length: 8,
        }
    }

    /// `merge_short` against the crate's heap loop (`merge_all`) on random merges and words.
    #[test]
    fn short_word_merging_is_the_heap_loop() {
        let mut state = 11u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let letters = ["a", "b", "c", "d"];
        let mut tokens: Vec<String> = letters.iter().map(|l| l.to_string()).collect();
        let mut merges = Vec::new();
        while merges.len() < 60 {
            let (a, b) = (
                tokens[next(tokens.len())].clone(),
                tokens[next(tokens.len())].clone(),
            );
            if !merges.contains(&(a.clone(), b.clone())) && a.len() + b.len() <= 6 {
                tokens.push(format!("{a}{b}"));
                merges.push((a, b));
            }
        }
        let merges: Vec<(&str, &str)> = merges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let t = BpeTokenizer::new(&spec(&merges)).unwrap();
        assert!(t.injective);
        let (mut queue, mut pairs) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let word: String = (0..1 + next(SHORT_WORD))
                .map(|_| letters[next(letters.len())])
                .collect();
            let symbols: Vec<Symbol> = (0..word.len())
                .map(|i| Symbol {
                    id: t.byte_ids[word.as_bytes()[i] as usize].unwrap(),
                    prev: i as i32 - 1,
                    next: if i + 1 < word.len() { i as i32 + 1 } else { -1 },
                    len: 1,
                })
                .collect();
            let (mut heap, mut short) = (symbols.clone(), symbols);
            t.merge_all(&mut heap, &mut queue);
            t.merge_short(&mut short, &mut pairs);
            let ids = |s: &[Symbol]| -> Vec<u32> {
                s.iter().filter(|s| s.len != 0).map(|s| s.id).collect()
            };
            assert_eq!(ids(&heap), ids(&short), "{word}");
        }
    }

    #[test]
    fn merges_lowest_rank_first_then_leftmost() {
        // "aaa": (a, a) merges at the left first; then (aa, a) is not a merge.
        let s = spec(&[("a", "a"), ("b", "c"), ("a", "bc")]);
        let t = BpeTokenizer::new(&s).unwrap();
        let (mut ids, mut scratch) = (Vec::new(), BpeScratch::default());
        t.encode_into("aaa abc", &mut ids, &mut scratch);
        let id = |token: &str| s.vocab[token];
        assert_eq!(ids, [1000, id("aa"), id("a"), id("Ġ"), id("abc"), 1001]);
        // Truncation keeps the first tokens and counts the rest.
        let dropped = t.encode_into_counting_dropped("aaaa aaaa aaaa", &mut ids, &mut scratch);
        assert_eq!(ids.len(), 8);
        assert_eq!(dropped, 2 + 1 + 2 + 1 + 2 - 6);
    }

    /// With `add_prefix_space` and no added tokens, an empty text is the specials alone (the
    /// crate drops the empty split before the prefix would make it `Ġ`).
    #[test]
    fn an_empty_text_is_only_the_specials() {
        let mut s = spec(&[("a", "a")]);
        s.add_prefix_space = true;
        let t = BpeTokenizer::new(&s).unwrap();
        let (mut ids, mut scratch) = (Vec::new(), BpeScratch::default());
        t.encode_into("", &mut ids, &mut scratch);
        assert_eq!(ids, [1000, 1001]);
        t.encode_into("a", &mut ids, &mut scratch);
        assert_eq!(ids, [1000, s.vocab["Ġ"], s.vocab["a"], 1001]);
    }
}
