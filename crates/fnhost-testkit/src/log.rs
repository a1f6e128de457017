//! The daemon's stderr: either a file (read back on demand) or captured in
//! memory by a reader thread that keeps its last lines for error messages
//! and its last warnings and errors (terminal colours stripped) for reports.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;

/// Lines of captured stderr kept for error messages.
const TAIL_LINES: usize = 40;
/// WARN and ERROR lines kept.
const WARNING_LINES: usize = 20;

#[derive(Default)]
pub(crate) struct Captured {
    tail: VecDeque<String>,
    warnings: VecDeque<String>,
}

/// Where the daemon's stderr went.
pub(crate) enum Log {
    File(PathBuf),
    Captured(Arc<Mutex<Captured>>),
}

impl Log {
    /// Starts a thread that captures `stderr` until it closes.
    pub(crate) fn capture(stderr: impl Read + Send + 'static) -> Self {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let sink = captured.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let Ok(mut c) = sink.lock() else { return };
                let plain = strip_ansi(&line);
                if is_warning(&plain) {
                    push_bounded(&mut c.warnings, plain, WARNING_LINES);
                }
                push_bounded(&mut c.tail, line, TAIL_LINES);
            }
        });
        Self::Captured(captured)
    }

    /// The last `n` lines (at most the kept tail when captured).
    pub(crate) fn tail(&self, n: usize) -> String {
        let lines: Vec<String> = match self {
            Self::File(path) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect(),
            Self::Captured(c) => c
                .lock()
                .map(|c| c.tail.iter().cloned().collect())
                .unwrap_or_default(),
        };
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Everything written so far (the kept tail when captured).
    pub(crate) fn text(&self) -> String {
        match self {
            Self::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
            Self::Captured(_) => self.tail(TAIL_LINES),
        }
    }

    /// The last WARN and ERROR lines (up to 20), without terminal colours.
    pub(crate) fn warnings(&self) -> Vec<String> {
        match self {
            Self::File(path) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let mut kept = VecDeque::new();
                for plain in text.lines().map(strip_ansi).filter(|l| is_warning(l)) {
                    push_bounded(&mut kept, plain, WARNING_LINES);
                }
                kept.into()
            }
            Self::Captured(c) => c
                .lock()
                .map(|c| c.warnings.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// A suffix for error messages: the log's last lines, or that it is empty.
    pub(crate) fn context(&self) -> String {
        let tail = self.tail(TAIL_LINES);
        if tail.is_empty() {
            "; fnhost wrote nothing to stderr".to_owned()
        } else {
            format!("; last lines of fnhost's stderr:\n{tail}")
        }
    }
}

fn is_warning(plain: &str) -> bool {
    plain.contains(" WARN ") || plain.contains(" ERROR ")
}

fn push_bounded(lines: &mut VecDeque<String>, line: String, max: usize) {
    if lines.len() == max {
        lines.pop_front();
    }
    lines.push_back(line);
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_terminal_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x"),
            "2026  WARN x"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn file_log_tail_and_warnings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stderr.log");
        std::fs::write(&path, "a\n\u{1b}[33m WARN \u{1b}[0mslow\nb\nc ERROR d\n").expect("write");
        let log = Log::File(path);
        assert_eq!(log.tail(2), "b\nc ERROR d");
        assert_eq!(log.warnings(), [" WARN slow", "c ERROR d"]);
        assert!(log.context().contains("last lines"));
    }

    #[test]
    fn captured_log_keeps_a_bounded_tail() {
        let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let log = Log::capture(std::io::Cursor::new(text.into_bytes()));
        let done = || log.tail(1) == "line 49";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(log.tail(100).lines().count(), TAIL_LINES);
        assert!(log.warnings().is_empty());
        let missing = Log::File(PathBuf::from("/nonexistent/stderr.log"));
        assert_eq!(missing.context(), "; fnhost wrote nothing to stderr");
    }
}
