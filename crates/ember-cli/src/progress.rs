//! One-line progress bars on stderr, redrawn in place with `\r`: texts done, rate, ETA
//! ([`Progress`]); and bytes of a hub download ([`DownloadBar`], fed by ember's
//! `HubConfig::on_progress`).
//!
//! Shown only when stderr is a terminal and the work is large (≥ [`MIN_TEXTS`] texts, files
//! ≥ [`MIN_DOWNLOAD_BYTES`]), so pipes, logs and batch jobs see nothing of them; stdout never
//! does.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Inputs smaller than this finish too soon for a bar to help.
pub const MIN_TEXTS: usize = 1000;

/// Redraws at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

const BAR_WIDTH: usize = 24;

pub struct Progress {
    total: usize,
    start: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
}

impl Progress {
    /// A bar for `total` texts, drawn only if stderr is a terminal and `total ≥ MIN_TEXTS`.
    pub fn new(total: usize) -> Self {
        Self {
            total,
            start: Instant::now(),
            last_draw: None,
            enabled: total >= MIN_TEXTS && std::io::stderr().is_terminal(),
        }
    }

    /// This bar, never drawn (the rows themselves go to stderr).
    pub fn hidden(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// `done` texts of `total` are embedded.
    pub fn update(&mut self, done: usize) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|last| now - last < REDRAW_EVERY && done < self.total)
        {
            return;
        }
        self.last_draw = Some(now);
        let line = progress_line(done, self.total, now - self.start);
        // A failed write to stderr is no reason to stop embedding.
        let _ = write!(std::io::stderr().lock(), "\r{line}\x1b[K");
    }

    /// Ends the bar's line, so what follows on stderr starts on a fresh one.
    pub fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let _ = writeln!(std::io::stderr().lock());
        }
        self.enabled = false;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `[#######.........]  4,096/10,000 texts  41%  812 texts/s  ETA 0:07`
pub fn progress_line(done: usize, total: usize, elapsed: Duration) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((fraction * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    };
    let eta = if done == total {
        format!("in {}", clock(seconds))
    } else if rate > 0.0 {
        format!("ETA {}", clock((total - done) as f64 / rate))
    } else {
        "ETA ?".to_owned()
    };
    format!(
        "[{}{}] {}/{} texts {:>3.0}%  {:.0} texts/s  {eta}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        thousands(done),
        thousands(total),
        fraction * 100.0,
        rate,
    )
}

/// Downloads smaller than this finish too soon for a bar to help.
pub const MIN_DOWNLOAD_BYTES: u64 = 1 << 20;

/// Byte progress of the files a hub download fetches, one line per large file.
pub struct DownloadBar {
    enabled: bool,
    state: Mutex<DownloadState>,
}

/// The file being drawn: where its download started, and when.
struct DownloadState {
    file: String,
    start: Instant,
    start_bytes: u64,
    last_draw: Option<Instant>,
}

impl DownloadBar {
    /// A bar drawn only if stderr is a terminal.
    pub fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            state: Mutex::new(DownloadState {
                file: String::new(),
                start: Instant::now(),
                start_bytes: 0,
                last_draw: None,
            }),
        }
    }

    /// One step of a download (ember's `HubConfig::on_progress` callback).
    pub fn update(&self, progress: &ember::DownloadProgress<'_>) {
        if !self.enabled {
            return;
        }
        // A panic elsewhere while drawing leaves nothing worth refusing to draw over.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if state.file != progress.file {
            *state = DownloadState {
                file: progress.file.to_owned(),
                start: now,
                start_bytes: progress.downloaded,
                last_draw: None,
            };
        }
        let large = progress.total.unwrap_or(progress.downloaded) >= MIN_DOWNLOAD_BYTES;
        let due = state
            .last_draw
            .is_none_or(|last| now - last >= REDRAW_EVERY);
        if !large || !(due || progress.finished) {
            return;
        }
        state.last_draw = Some(now);
        let line = download_line(
            progress.model,
            progress.file,
            progress.downloaded,
            progress.total,
            progress.downloaded - state.start_bytes.min(progress.downloaded),
            now - state.start,
        );
        let mut stderr = std::io::stderr().lock();
        // A failed write to stderr is no reason to stop downloading.
        let _ = write!(stderr, "\r{line}\x1b[K");
        if progress.finished {
            let _ = writeln!(stderr);
        }
    }
}

/// `org/name model.safetensors  45.1/90.9 MB  49%  11.3 MB/s` (`fetched`: bytes this run, for
/// the rate; `done` includes a resumed prefix).
pub fn download_line(
    model: &str,
    file: &str,
    done: u64,
    total: Option<u64>,
    fetched: u64,
    elapsed: Duration,
) -> String {
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        mb(fetched) / seconds
    } else {
        0.0
    };
    match total {
        Some(total) if total > 0 => format!(
            "{model} {file}  {:.1}/{:.1} MB {:>3.0}%  {rate:.1} MB/s",
            mb(done),
            mb(total),
            done as f64 / total as f64 * 100.0
        ),
        _ => format!("{model} {file}  {:.1} MB  {rate:.1} MB/s", mb(done)),
    }
}

/// `h:mm:ss`, or `m:ss` under an hour.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, m, s) => format!("{m}:{s:02}"),
        (h, m, s) => format!("{h}:{m:02}:{s:02}"),
    }
}

/// `1234567` → `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_count_rate_and_eta() {
        let line = progress_line(4_096, 10_000, Duration::from_secs(5));
        assert_eq!(
            line,
            "[#########...............] 4,096/10,000 texts  41%  819 texts/s  ETA 0:07"
        );
        let done = progress_line(1_234_567, 1_234_567, Duration::from_secs(3_725));
        assert!(done.starts_with(&format!("[{}]", "#".repeat(24))), "{done}");
        assert!(done.ends_with("1,234,567/1,234,567 texts 100%  331 texts/s  in 1:02:05"));
        assert!(progress_line(0, 5_000, Duration::ZERO).ends_with("0 texts/s  ETA ?"));
    }

    #[test]
    fn download_line_shows_bytes_share_and_rate() {
        let line = download_line(
            "org/name",
            "model.safetensors",
            45_100_000,
            Some(90_900_000),
            22_550_000,
            Duration::from_secs(2),
        );
        assert_eq!(
            line,
            "org/name model.safetensors  45.1/90.9 MB  50%  11.3 MB/s"
        );
        let unknown = download_line("o/n", "f", 3_000_000, None, 3_000_000, Duration::ZERO);
        assert_eq!(unknown, "o/n f  3.0 MB  0.0 MB/s");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
