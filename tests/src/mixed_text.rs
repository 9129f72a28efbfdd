//! Seeded generator of hostile texts for tokenizer parity tests.
//!
//! Each text joins fragments of one kind after another: English and vocabulary words in
//! random case, ASCII and Unicode punctuation and symbols, digits, accented Latin (composed
//! and decomposed), stacks of combining marks, CJK ideographs (every block BERT spaces, and
//! neighbours it does not), kana, Hangul, Arabic, emoji with skin tones, ZWJ and keycaps,
//! control and format characters, NUL, U+FFFD, every kind of whitespace, literal special
//! tokens with and without spaces, words over 100 chars, case-mapping oddities (İ, ẞ, Σ, ǅ),
//! and random scalar values from every plane. Some texts are long enough to be truncated.
//! Separators are mostly spaces, sometimes nothing (so fragments glue into one word).

use crate::seeded::mix;

/// splitmix64-driven text generator; the same seed gives the same texts on every platform.
pub struct MixedText {
    state: u64,
    /// Words to draw from (e.g. a vocabulary with `##` removed), so that WordPiece finds
    /// matches, continuations and near misses rather than only unknown words.
    words: Vec<String>,
}

const ENGLISH: &[&str] = &[
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "running",
    "unbelievable",
    "tokenization",
    "embedding",
    "sentence",
    "transformers",
    "hello",
    "world",
    "naive",
    "cafe",
    "international",
    "reconstruction",
    "a",
    "I",
    "it's",
    "don't",
    "U.S.A.",
    "e-mail",
    "co-operate",
    "state-of-the-art",
    "www.example.com",
    "user@example.org",
    "#hashtag",
    "@mention",
    "$100",
    "50%",
    "C++",
    "naïveté",
    "antidisestablishmentarianism",
];

const PUNCTUATION: &[&str] = &[
    "!", "\"", "#", "$", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/", ":", ";", "<", "=",
    ">", "?", "@", "[", "\\", "]", "^", "_", "`", "{", "|", "}", "~", "“", "”", "‘", "’", "«", "»",
    "—", "–", "…", "¡", "¿", "、", "。", "「", "」", "・", "·", "‼", "⁇", "＂", "٪", "،", "؛", "؟",
    "¶", "§", "⸺", "‰", "€", "£", "¥", "©", "®", "°", "±", "×", "÷", "∑", "√", "∞", "¦", "¨", "¯",
    "´", "¸", "˜", "＿", "﹏", "‐", "⁀", "〜", "〰", "゠", "꧁",
];

const ACCENTED: &[&str] = &[
    "café",
    "naïve",
    "Ångström",
    "façade",
    "Crème",
    "brûlée",
    "jalapeño",
    "Zürich",
    "São",
    "Øresund",
    "Łódź",
    "İstanbul",
    "ǅemal",
    "straße",
    "ẞ",
    "ΣΊΣΥΦΟΣ",
    "Ωmega",
    "K",
    "Å",
    "ﬁne",
    "ﬀ",
    "Ａｂｃ",
    "ŉ",
    "ΐ",
    "ᾈ",
    "e\u{301}",
    "a\u{30A}",
    "n\u{303}",
    "A\u{308}\u{304}",
    "Ǖ",
    "ḗ",
    "Ệ",
    "Việt Nam",
    "Dvořák",
    "Čapek",
    "Ñandú",
    "Ÿ",
    "Œuvre",
    "İi",
    "ı",
    "Ⅻ",
    "ℌ",
    "ℵ",
    "µ",
    "ß",
    "Ǆ",
    "ǈ",
    "ǋ",
    "Ϊ",
    "ϔ",
    "Ѐ",
    "Ё",
    "Й",
    "ї",
];

/// Ranges of combining marks (Mn, Mc with a combining class, Me).
const MARKS: &[(u32, u32)] = &[
    (0x0300, 0x036F),
    (0x0483, 0x0489),
    (0x0591, 0x05BD),
    (0x064B, 0x065F),
    (0x093C, 0x094D),
    (0x0E31, 0x0E3A),
    (0x1AB0, 0x1ACE),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20F0),
    (0x302A, 0x302F),
    (0x3099, 0x309A),
    (0xFE20, 0xFE2F),
    (0x1D165, 0x1D169),
    (0x1D16D, 0x1D172),
    (0xE0100, 0xE01EF),
];

/// CJK ideograph blocks BERT spaces out, their edges, and neighbours it does not.
const CJK: &[(u32, u32)] = &[
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2B91F),
    (0x2B920, 0x2CEAF),
    (0x2CEB0, 0x2EBEF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
    (0x30000, 0x3134F),
    (0x3040, 0x30FF),
    (0xFF61, 0xFF9F),
    (0x3000, 0x303F),
    (0x2E80, 0x2FDF),
    (0x9FF0, 0xA00F),
];

const HANGUL: &[(u32, u32)] = &[(0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3131, 0x318E)];

const ARABIC: &[(u32, u32)] = &[
    (0x0621, 0x064A),
    (0x064B, 0x0652),
    (0x0660, 0x0669),
    (0x06F0, 0x06F9),
];

const EMOJI: &[&str] = &[
    "😀",
    "🍕",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "🇺🇸",
    "🇯🇵",
    "1\u{FE0F}\u{20E3}",
    "❤\u{FE0F}",
    "🏳\u{FE0F}\u{200D}🌈",
    "🧑🏿‍🚀",
    "👩‍❤️‍💋‍👨",
    "🤷‍♀️",
    "🫠",
    "☕",
    "✈",
    "⚽",
    "🦀",
    "\u{1F3FB}",
    "\u{200D}",
    "🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
];

/// Control, format, private-use and other "other" characters (and a few that are not).
const CONTROLS: &[(u32, u32)] = &[
    (0x0001, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0xFFFE, 0xFFFF),
    (0xE000, 0xF8FF),
    (0x0378, 0x0379),
    (0x110BD, 0x110BD),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE007F),
    (0xF0000, 0xF0010),
    (0x10FFF0, 0x10FFFF),
];

const WHITESPACE: &[char] = &[
    ' ', '\t', '\n', '\r', '\u{B}', '\u{C}', '\u{85}', '\u{A0}', '\u{1680}', '\u{2000}',
    '\u{2003}', '\u{2007}', '\u{200A}', '\u{2028}', '\u{2029}', '\u{202F}', '\u{205F}', '\u{3000}',
];

const SPECIALS: &[&str] = &[
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "[UNK]",
    "[PAD]",
    "[CLS",
    "CLS]",
    "[cls]",
    "[[SEP]]",
    "[MASK][MASK]",
    "[SEP]x",
    "x[CLS]",
    "[ MASK ]",
    "[MASK]]",
    "[[UNK]",
    "[Cls]",
];

const CASE_ODDITIES: &[&str] = &[
    "İ", "ẞ", "Σ", "ΣΑΣ", "ǅ", "ǲ", "Ω", "K", "Å", "ﬃ", "ﬆ", "ŉ", "ǰ", "ᾼ", "ῼ", "Ꭰ", "ꭰ", "𐐀",
    "𞤀", "Ⓐ", "ⓐ", "🄰", "ℂ", "ⅰ", "Ⅰ",
];

impl MixedText {
    /// A generator seeded with `seed`, drawing whole words from `words`.
    pub fn new(seed: u64, words: Vec<String>) -> Self {
        Self { state: seed, words }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant here.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn char_in(&mut self, ranges: &[(u32, u32)]) -> char {
        loop {
            let &(lo, hi) = self.pick(ranges);
            let code = lo + self.below((hi - lo + 1) as usize) as u32;
            if let Some(c) = char::from_u32(code) {
                return c;
            }
        }
    }

    /// Any scalar value, planes 0 and 1 favoured.
    fn any_char(&mut self) -> char {
        let limit = match self.below(4) {
            0 | 1 => 0x1_0000,
            2 => 0x2_0000,
            _ => 0x11_0000,
        };
        loop {
            if let Some(c) = char::from_u32(self.below(limit) as u32) {
                return c;
            }
        }
    }

    fn cased(&mut self, word: &str, out: &mut String) {
        match self.below(4) {
            0 => out.push_str(&word.to_uppercase()),
            1 => {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(chars.as_str());
                }
            }
            _ => out.push_str(word),
        }
    }

    fn fragment(&mut self, out: &mut String) {
        match self.below(20) {
            0 | 1 => {
                let word = *self.pick(ENGLISH);
                self.cased(word, out);
            }
            2..=4 if !self.words.is_empty() => {
                // One to three vocabulary pieces glued: matches, continuations, near misses.
                for _ in 0..1 + self.below(3) {
                    let index = self.below(self.words.len());
                    let word = self.words[index].clone();
                    self.cased(&word, out);
                }
            }
            2..=5 => {
                for _ in 0..1 + self.below(12) {
                    out.push((b'a' + self.below(26) as u8) as char);
                }
            }
            6 => out.push_str(self.pick::<&str>(PUNCTUATION)),
            7 => match self.below(4) {
                0 => out.push_str(&self.next_u64().to_string()),
                1 => out.push_str(&format!("{}.{}", self.below(1000), self.below(100))),
                2 => out.push_str(&format!("{},{:03}", self.below(100), self.below(1000))),
                _ => {
                    for _ in 0..1 + self.below(4) {
                        let c = self.char_in(&[
                            (0x0660, 0x0669),
                            (0xFF10, 0xFF19),
                            (0x00B2, 0x00B3),
                            (0x2070, 0x2079),
                            (0x0966, 0x096F),
                        ]);
                        out.push(c);
                    }
                }
            },
            8 => {
                let word = *self.pick(ACCENTED);
                self.cased(word, out);
            }
            9 => {
                // A base (sometimes none) carrying a stack of marks.
                if self.below(5) > 0 {
                    out.push(
                        *self.pick(&['a', 'e', 'o', 'A', 'ı', 'ø', 'α', 'и', 'क', 'ก', '中', '가']),
                    );
                }
                for _ in 0..1 + self.below(8) {
                    let c = self.char_in(MARKS);
                    out.push(c);
                }
            }
            10 => {
                for _ in 0..1 + self.below(6) {
                    let c = self.char_in(CJK);
                    out.push(c);
                }
            }
            11 => {
                for _ in 0..1 + self.below(5) {
                    let c = self.char_in(HANGUL);
                    out.push(c);
                }
            }
            12 => {
                for _ in 0..1 + self.below(8) {
                    let c = self.char_in(ARABIC);
                    out.push(c);
                }
            }
            13 => {
                for _ in 0..1 + self.below(3) {
                    out.push_str(self.pick::<&str>(EMOJI));
                }
            }
            14 => {
                let c = self.char_in(CONTROLS);
                out.push(c);
            }
            15 => out.push_str(self.pick::<&str>(&[
                "\u{0}",
                "\u{FFFD}",
                "a\u{0}b",
                "\u{FFFD}\u{FFFD}",
                "\u{0}[CLS]",
            ])),
            16 => {
                for _ in 0..1 + self.below(3) {
                    out.push(*self.pick(WHITESPACE));
                }
            }
            17 => {
                let special = *self.pick(SPECIALS);
                match self.below(3) {
                    0 => out.push_str(special),
                    1 => {
                        out.push(' ');
                        out.push_str(special);
                        out.push(' ');
                    }
                    _ => {
                        out.push_str("ab");
                        out.push_str(special);
                        out.push_str("cd");
                    }
                }
            }
            18 => match self.below(4) {
                // Around `max_input_chars_per_word` = 100.
                0 => {
                    let len = 98 + self.below(5);
                    for _ in 0..len {
                        out.push('a');
                    }
                }
                1 => {
                    for _ in 0..20 + self.below(40) {
                        out.push_str("un");
                    }
                }
                2 => {
                    let len = 101 + self.below(300);
                    for _ in 0..len {
                        out.push((b'a' + self.below(26) as u8) as char);
                    }
                }
                _ => {
                    // Long in chars, short in words: every ideograph is its own word.
                    for _ in 0..101 + self.below(50) {
                        out.push(self.char_in(&[(0x4E00, 0x9FFF)]));
                    }
                }
            },
            _ => match self.below(2) {
                0 => out.push_str(self.pick::<&str>(CASE_ODDITIES)),
                _ => {
                    for _ in 0..1 + self.below(4) {
                        let c = self.any_char();
                        out.push(c);
                    }
                }
            },
        }
    }

    /// The next text: usually 1–30 fragments, sometimes none or one, sometimes hundreds.
    pub fn text(&mut self) -> String {
        let fragments = match self.below(100) {
            0..=4 => self.below(2),
            // Enough to pass 256 tokens, yet few: these dominate the tests' run time.
            5..=7 => 150 + self.below(250),
            _ => 1 + self.below(30),
        };
        let mut out = String::new();
        for i in 0..fragments {
            if i > 0 {
                match self.below(10) {
                    0 | 1 => {}
                    2 => out.push(*self.pick(WHITESPACE)),
                    _ => out.push(' '),
                }
            }
            self.fragment(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_texts() {
        let texts = |seed| {
            let mut g = MixedText::new(seed, vec!["word".into()]);
            (0..200).map(|_| g.text()).collect::<Vec<_>>()
        };
        assert_eq!(texts(7), texts(7));
        assert_ne!(texts(7), texts(8));
        assert!(texts(7).iter().any(|t| t.chars().count() > 1000));
    }
}
