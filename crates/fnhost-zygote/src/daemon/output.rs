//! A zygote's stdout and stderr, seen from the daemon: logged line by line
//! (cut and rate-limited so a chatty function cannot flood the daemon's
//! log), with the last lines kept for error messages.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// How many output lines of a zygote are kept for error messages.
const OUTPUT_TAIL_LINES: usize = 20;
/// Longest output line logged; longer lines are cut.
const MAX_LINE: usize = 4096;
/// Most output lines per second a zygote (with all its clones) may log;
/// the rest is counted and dropped.
const MAX_LINES_PER_SECOND: u32 = 1000;

/// The last output lines of a zygote, shared with its forwarder.
#[derive(Debug, Clone, Default)]
pub(super) struct OutputTail(Arc<Mutex<VecDeque<String>>>);

impl OutputTail {
    fn push(&self, line: String) {
        let mut tail = self.0.lock().expect("output tail lock poisoned");
        if tail.len() == OUTPUT_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    /// The kept lines joined for an error message, or "no output".
    pub(super) fn text(&self) -> String {
        let lines = self.0.lock().expect("output tail lock poisoned");
        if lines.is_empty() {
            "no output".to_string()
        } else {
            lines.iter().cloned().collect::<Vec<_>>().join(" | ")
        }
    }
}

/// A running forwarder of a zygote's output ([`forward_output`]).
pub(super) struct Forwarding {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Option<OwnedFd>>,
}

impl Forwarding {
    /// Stops forwarding (what was read of an unfinished line is logged)
    /// and returns the pipe's read end; `None` once the output has ended
    /// (every writer gone) or the pipe could not be handed back.
    pub(super) async fn stop(self) -> Option<OwnedFd> {
        let _ = self.stop.send(());
        self.task.await.ok().flatten()
    }
}

/// Logs a zygote's stdout/stderr line by line (each cut at [`MAX_LINE`]
/// bytes, at most [`MAX_LINES_PER_SECOND`]), keeping the last lines in
/// `tail`, until the output ends or it is stopped.
pub(super) fn forward_output(
    output: OwnedFd,
    function: Arc<str>,
    tail: OutputTail,
) -> io::Result<Forwarding> {
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(output)?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(receiver);
        let mut buf = Vec::new();
        let mut window = Instant::now();
        let (mut logged, mut dropped) = (0u32, 0u64);
        loop {
            buf.clear();
            let read = tokio::select! {
                biased;
                _ = &mut stopped => {
                    // A line cut short by the stop: what there is of it.
                    let pending = lines.buffer();
                    let room = MAX_LINE.saturating_sub(buf.len());
                    buf.extend_from_slice(&pending[..pending.len().min(room)]);
                    if !buf.is_empty() {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        tracing::info!(target: "fnhost::function_output", function = %function, "{line}");
                        tail.push(line);
                    }
                    return lines.into_inner().into_nonblocking_fd().ok();
                }
                read = read_line_bounded(&mut lines, &mut buf, MAX_LINE) => read,
            };
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {
                    if window.elapsed() >= Duration::from_secs(1) {
                        window = Instant::now();
                        logged = 0;
                        dropped = 0;
                    }
                    if logged >= MAX_LINES_PER_SECOND {
                        dropped += 1;
                        if dropped == 1 {
                            tracing::warn!(function = %function, "function output over {MAX_LINES_PER_SECOND} lines/s; dropping lines for the rest of this second");
                        }
                        metrics::counter!("fnhost_function_output_dropped_lines_total", "function" => function.to_string()).increment(1);
                        continue;
                    }
                    logged += 1;
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    tracing::info!(target: "fnhost::function_output", function = %function, "{line}");
                    tail.push(line);
                }
            }
        }
    });
    Ok(Forwarding { stop, task })
}

/// Reads one line into `buf`, keeping at most `max` bytes of it: the rest
/// of an over-long line is read and thrown away, so a function that writes
/// gigabytes without a newline costs the daemon `max` bytes, not gigabytes.
/// Returns how many bytes the line had (0 at the end of the output).
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        total += used;
        reader.consume(used);
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_long_lines_are_cut_without_being_buffered_whole() {
        // 1 MiB without a newline, then a short line, through a small buffer.
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"\nshort\n");
        let mut reader = tokio::io::BufReader::with_capacity(8192, &input[..]);
        let mut buf = Vec::new();
        let n = read_line_bounded(&mut reader, &mut buf, 4096)
            .await
            .expect("read");
        assert_eq!(n, (1 << 20) + 1);
        assert_eq!(buf.len(), 4096, "only max bytes were kept");
        assert!(buf.capacity() < 64 << 10, "the line was never held whole");
        buf.clear();
        let n = read_line_bounded(&mut reader, &mut buf, 4096)
            .await
            .expect("read");
        assert_eq!((n, &buf[..]), (6, &b"short\n"[..]));
        buf.clear();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 4096)
                .await
                .expect("eof"),
            0
        );
    }

    #[tokio::test]
    async fn a_stopped_forwarder_keeps_what_it_read_and_hands_the_pipe_back() {
        use std::io::{Read, Write};
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let mut writer = std::fs::File::from(write);
        let tail = OutputTail::default();
        let forwarding = forward_output(read, "f".into(), tail.clone()).expect("forward");
        writer.write_all(b"first\nhalf a li").expect("write");
        // One write under PIPE_BUF is one read: once the whole line is in
        // the tail, the half line is in the forwarder's buffer.
        while tail.text() != "first" {
            tokio::task::yield_now().await;
        }
        let read = forwarding.stop().await.expect("the pipe comes back");
        assert_eq!(tail.text(), "first | half a li");
        // The same pipe: what is written now is there to read.
        writer.write_all(b"later").expect("write");
        let mut reader = std::fs::File::from(read);
        let mut got = [0u8; 5];
        reader.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"later");
    }

    #[tokio::test]
    async fn a_forwarder_whose_output_ended_has_no_pipe_to_hand_back() {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let forwarding = forward_output(read, "f".into(), OutputTail::default()).expect("forward");
        drop(write);
        while !forwarding.task.is_finished() {
            tokio::task::yield_now().await;
        }
        assert!(forwarding.stop().await.is_none());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let tail = OutputTail::default();
        assert_eq!(tail.text(), "no output");
        for i in 0..OUTPUT_TAIL_LINES + 2 {
            tail.push(format!("l{i}"));
        }
        let text = tail.text();
        assert!(text.starts_with("l2 | l3"), "{text}");
        assert!(
            text.ends_with(&format!("l{}", OUTPUT_TAIL_LINES + 1)),
            "{text}"
        );
    }
}
