//! Lines of a file with memory bounded by the longest line accepted.
//!
//! [`BoundedLines`] reads through [`BufRead::fill_buf`] and copies at most `limit` bytes of a
//! line: a longer line is reported as soon as its `limit + 1`-th byte arrives, without reading
//! the rest of it, and the next call skips to the following newline without buffering.

use std::io::{self, BufRead};

/// What [`BoundedLines::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A line (1-based number), without its `\n` or `\r\n`.
    Line { number: usize, bytes: &'a [u8] },
    /// A line longer than the limit; `seen` bytes of it were read (`limit + 1` or, at the end
    /// of the file, what there was) and the rest was not.
    TooLong { number: usize, seen: usize },
    /// The end of the file.
    End,
}

/// A line reader whose buffer never holds more than `limit` bytes.
pub struct BoundedLines<R> {
    inner: R,
    limit: usize,
    number: usize,
    buf: Vec<u8>,
    /// Inside a line already reported as too long: its rest is skipped first.
    skipping: bool,
    /// The most bytes the line buffer held at once.
    peak: usize,
}

impl<R: BufRead> BoundedLines<R> {
    /// Reads lines of at most `limit` bytes from `inner`.
    pub fn new(inner: R, limit: usize) -> Self {
        BoundedLines {
            inner,
            limit,
            number: 0,
            buf: Vec::new(),
            skipping: false,
            peak: 0,
        }
    }

    /// The most bytes the line buffer held at once.
    #[cfg(test)]
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Skips to just after the next newline (or the end), reading without buffering.
    fn skip_rest(&mut self) -> io::Result<()> {
        self.inner.skip_until(b'\n')?;
        self.skipping = false;
        Ok(())
    }

    /// The next line.
    pub fn next_line(&mut self) -> io::Result<Next<'_>> {
        if self.skipping {
            self.skip_rest()?;
        }
        self.buf.clear();
        let mut any = false;
        loop {
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                if !any {
                    return Ok(Next::End);
                }
                break;
            }
            any = true;
            let (take, newline) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (available.len(), false),
            };
            let room = self.limit - self.buf.len();
            if take > room {
                // One byte past the limit is proof enough: the rest is never read here.
                push(
                    &mut self.buf,
                    &mut self.peak,
                    self.limit,
                    &available[..=room],
                );
                self.inner.consume(room + 1);
                self.number += 1;
                self.skipping = true;
                let seen = self.buf.len();
                self.buf.clear();
                return Ok(Next::TooLong {
                    number: self.number,
                    seen,
                });
            }
            push(
                &mut self.buf,
                &mut self.peak,
                self.limit,
                &available[..take],
            );
            self.inner.consume(take + usize::from(newline));
            if newline {
                break;
            }
        }
        self.number += 1;
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(Next::Line {
            number: self.number,
            bytes: &self.buf,
        })
    }
}

/// Appends `bytes` to a line buffer, growing it no further than `limit` (plus the one byte
/// that proves a line too long) needs.
fn push(buf: &mut Vec<u8>, peak: &mut usize, limit: usize, bytes: &[u8]) {
    let needed = buf.len() + bytes.len();
    if needed > buf.capacity() {
        let target = needed.max(buf.capacity() * 2).min(limit).max(needed);
        buf.reserve_exact(target - buf.len());
    }
    buf.extend_from_slice(bytes);
    *peak = (*peak).max(buf.len());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::io::{BufReader, Read};

    use super::*;

    /// Counts the bytes read from the wrapped reader.
    struct Counting<R> {
        inner: R,
        read: usize,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(out)?;
            self.read += n;
            Ok(n)
        }
    }

    fn lines(input: &[u8], limit: usize) -> Vec<String> {
        let mut r = BoundedLines::new(BufReader::with_capacity(7, input), limit);
        let mut out = Vec::new();
        loop {
            match r.next_line().unwrap() {
                Next::Line { number, bytes } => {
                    out.push(format!("{number}:{}", String::from_utf8_lossy(bytes)));
                }
                Next::TooLong { number, seen } => out.push(format!("{number}:too long ({seen})")),
                Next::End => return out,
            }
        }
    }

    #[test]
    fn splits_lines_and_numbers_them() {
        assert_eq!(
            lines(b"ab\r\n\ncdef\nlast", 10),
            ["1:ab", "2:", "3:cdef", "4:last"]
        );
        assert_eq!(lines(b"one\n", 10), ["1:one"]);
        assert!(lines(b"", 10).is_empty());
        // Exactly the limit is accepted, one more is not.
        assert_eq!(
            lines(b"0123456789\n0123456789x\nok", 10),
            ["1:0123456789", "2:too long (11)", "3:ok"]
        );
    }

    #[test]
    fn a_line_ten_times_the_limit_is_rejected_without_being_read_whole() {
        let limit = 1_000;
        let mut input = vec![b'x'; 10 * limit];
        input.extend_from_slice(b"\nnext\n");
        let mut counting = Counting {
            inner: &input[..],
            read: 0,
        };
        {
            let mut r = BoundedLines::new(BufReader::with_capacity(64, &mut counting), limit);
            assert_eq!(
                r.next_line().unwrap(),
                Next::TooLong {
                    number: 1,
                    seen: limit + 1
                }
            );
            assert!(r.peak() <= limit + 1, "buffered {}", r.peak());
            assert!(
                r.buf.capacity() <= limit + 1,
                "capacity {}",
                r.buf.capacity()
            );
        }
        // Only what the limit needs (plus one buffer fill) came from the file.
        assert!(counting.read <= limit + 64, "read {}", counting.read);

        // Read on: the rest is skipped without buffering, and the next line comes whole.
        let mut r = BoundedLines::new(BufReader::with_capacity(64, &input[..]), limit);
        assert!(matches!(r.next_line().unwrap(), Next::TooLong { .. }));
        assert_eq!(
            r.next_line().unwrap(),
            Next::Line {
                number: 2,
                bytes: b"next"
            }
        );
        assert_eq!(r.next_line().unwrap(), Next::End);
        assert!(r.peak() <= limit + 1);
    }
}
