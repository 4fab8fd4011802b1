//! Bulk updates: JSON Lines parsed in parallel (offline import) or incrementally as a request
//! body streams in (admin API).
//!
//! **Invariants:**
//! - All or nothing: the first bad line (by line number) is reported and nothing of that file or
//!   request is applied.
//! - Errors name the line and the problem, never the ID.
//! - An offline import changes the data directory by one atomic snapshot rename; it holds the
//!   directory's lock, so it cannot run beside a gateway on the same data.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use super::log::{LogError, RecordBuilder};
use super::store::{load, lock_dir, remove_covered, revocation_dir};
use super::table::Slot;
use super::{Entry, LoadError, snapshot};

/// Parses one line (already without its newline); `None` for a blank line.
pub(super) fn parse_line(line: &[u8]) -> Option<Result<Entry, super::EntryError>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(Entry::parse(line))
}

/// Parses JSON Lines into slots on every core, keeping input order. `first_line` is the number
/// of the first line of `text` (for error messages).
pub fn parse_jsonl_parallel(text: &[u8], first_line: usize) -> Result<Vec<Slot>, LoadError> {
    const CHUNK: usize = 256 << 10;
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let end = if text.len() - start <= CHUNK {
            text.len()
        } else {
            memchr::memchr(b'\n', &text[start + CHUNK..])
                .map_or(text.len(), |i| start + CHUNK + i + 1)
        };
        chunks.push(&text[start..end]);
        start = end;
    }
    type Parsed = Result<(Vec<Slot>, usize), (usize, super::EntryError)>;
    let parsed: Vec<Parsed> = chunks
        .par_iter()
        .map(|chunk| {
            let mut slots = Vec::with_capacity(chunk.len() / 96);
            let mut lines = 0;
            for line in chunk.split(|&b| b == b'\n') {
                lines += 1;
                match parse_line(line) {
                    None => {}
                    Some(Ok(entry)) => slots.push(entry.slot()),
                    Some(Err(error)) => return Err((lines, error)),
                }
            }
            // A chunk ending in '\n' yields one empty piece after it that is not a line.
            Ok((slots, memchr::memchr_iter(b'\n', chunk).count()))
        })
        .collect();
    let mut out = Vec::new();
    let mut line_base = first_line;
    for chunk in parsed {
        match chunk {
            Ok((slots, newlines)) => {
                out.extend_from_slice(&slots);
                line_base += newlines;
            }
            Err((line, error)) => {
                return Err(LoadError::Entry {
                    line: line_base + line - 1,
                    error,
                });
            }
        }
    }
    Ok(out)
}

/// A JSON Lines request body parsed as it arrives, into one log record.
#[derive(Debug, Default)]
pub struct JsonlStream {
    partial: Vec<u8>,
    /// Lines completed so far.
    lines: usize,
    builder: RecordBuilder,
}

impl JsonlStream {
    /// Feeds the next piece of the body.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), LoadError> {
        while let Some(newline) = memchr::memchr(b'\n', bytes) {
            let line = if self.partial.is_empty() {
                &bytes[..newline]
            } else {
                self.partial.extend_from_slice(&bytes[..newline]);
                &self.partial[..]
            };
            self.lines += 1;
            let parsed = parse_line(line);
            self.push(parsed)?;
            self.partial.clear();
            bytes = &bytes[newline + 1..];
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn push(&mut self, parsed: Option<Result<Entry, super::EntryError>>) -> Result<(), LoadError> {
        match parsed {
            None => Ok(()),
            Some(Ok(entry)) => {
                self.builder.push(&entry);
                Ok(())
            }
            Some(Err(error)) => Err(LoadError::Entry {
                line: self.lines,
                error,
            }),
        }
    }

    /// The body ended: parses a last line without a newline and returns the record.
    pub fn finish(mut self) -> Result<RecordBuilder, LoadError> {
        if !self.partial.is_empty() {
            self.lines += 1;
            let partial = std::mem::take(&mut self.partial);
            self.push(parse_line(&partial))?;
        }
        Ok(self.builder)
    }

    /// Entries parsed so far.
    pub fn entries(&self) -> usize {
        self.builder.len()
    }
}

/// Why an import did not happen (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Data(#[from] LogError),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {error}; nothing was imported")]
    Line {
        path: String,
        line: usize,
        error: super::EntryError,
    },
    #[error("writing the snapshot failed: {0}; nothing was imported")]
    Write(std::io::Error),
}

/// What an import did.
#[derive(Debug, Clone, Copy)]
pub struct ImportSummary {
    pub entries: usize,
    /// Entries that took effect (not beaten by a newer `at` already on record).
    pub applied: usize,
    /// Revoked or suspended records in the list afterwards.
    pub adverse: usize,
    /// Records afterwards, reinstatement tombstones included.
    pub records: usize,
    pub seconds: f64,
    pub snapshot_bytes: u64,
}

/// Imports a JSON Lines file into `data_dir`: all entries, or none.
pub fn import_file(file: &Path, data_dir: &Path) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let dir = revocation_dir(data_dir);
    let _lock = lock_dir(&dir)?;
    let slots = parse_file(file)?;
    let loaded = load(&dir, true)?;
    let next = loaded.log.as_ref().map_or(0, |(_, n)| n + 1);
    drop(loaded.log);
    let list = loaded.list;
    let applied = list.apply_slots(&slots);
    let capture = list.table().capture();
    let written =
        snapshot::write(&dir, &capture, next, list.last_update()).map_err(ImportError::Write)?;
    // The snapshot is durable: the segments it covers can go. Best effort: the next start
    // removes any that are left, since the snapshot says it covers them.
    let _ = remove_covered(&dir, next);
    Ok(ImportSummary {
        entries: slots.len(),
        applied,
        adverse: list.len(),
        records: list.records(),
        seconds: started.elapsed().as_secs_f64(),
        snapshot_bytes: written.bytes,
    })
}

/// Parses a whole JSON Lines file of entries into slots, in file order: all, or the first bad
/// line's number.
pub fn parse_file(file: &Path) -> Result<Vec<Slot>, ImportError> {
    const BLOCK: usize = 64 << 20;
    let read_error = |source| ImportError::Read {
        path: file.display().to_string(),
        source,
    };
    let mut input = std::fs::File::open(file).map_err(read_error)?;
    // Parse block by block (memory stays bounded by the entries, not the text).
    let mut slots = Vec::new();
    let mut carry = Vec::new();
    let mut line = 1;
    let mut block = vec![0u8; BLOCK];
    loop {
        let read = input.read(&mut block).map_err(read_error)?;
        let at_end = read == 0;
        carry.extend_from_slice(&block[..read]);
        let cut = if at_end {
            carry.len()
        } else {
            match memchr::memrchr(b'\n', &carry) {
                Some(i) => i + 1,
                None => continue,
            }
        };
        let parsed = parse_jsonl_parallel(&carry[..cut], line).map_err(|error| match error {
            LoadError::Entry { line, error } => ImportError::Line {
                path: file.display().to_string(),
                line,
                error,
            },
            LoadError::Io { path, source } => ImportError::Read { path, source },
        })?;
        slots.extend_from_slice(&parsed);
        line += memchr::memchr_iter(b'\n', &carry[..cut]).count();
        carry.drain(..cut);
        if at_end {
            break;
        }
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, at: i64) -> String {
        format!(
            "{{\"kind\":\"credential\",\"id\":\"{id}\",\"status\":\"revoked\",\"reason\":\"lost\",\"at\":{at}}}\n"
        )
    }

    #[test]
    fn parallel_parsing_keeps_order_and_numbers_the_bad_line() {
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&line(&format!("c{i}"), i));
            if i % 1000 == 0 {
                text.push('\n');
            }
        }
        let slots = parse_jsonl_parallel(text.as_bytes(), 1).unwrap();
        assert_eq!(slots.len(), 20_000);
        assert_eq!(slots[12_345].at(), 12_345);
        let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
        lines[15_000] = "{\"kind\":\"credential\"}\n";
        let broken = lines.concat();
        match parse_jsonl_parallel(broken.as_bytes(), 1) {
            Err(LoadError::Entry { line, .. }) => assert_eq!(line, 15_001),
            other => panic!("expected a line error, got {:?}", other.map(|s| s.len())),
        }
    }

    #[test]
    fn a_streamed_body_parses_the_same_whatever_its_pieces() {
        let mut text = String::new();
        for i in 0..300 {
            text.push_str(&line(&format!("c{i}"), i));
        }
        text.push_str(line("last", 999).trim_end());
        for piece in [1, 7, 64, 10_000] {
            let mut stream = JsonlStream::default();
            for chunk in text.as_bytes().chunks(piece) {
                stream.feed(chunk).unwrap();
            }
            let (_, slots) = stream.finish().unwrap().finish();
            assert_eq!(slots, parse_jsonl_parallel(text.as_bytes(), 1).unwrap());
        }
        let mut stream = JsonlStream::default();
        stream.feed(line("a", 1).as_bytes()).unwrap();
        stream
            .feed(b"\n{\"kind\":\"subject\",\"id\":\"x\"}")
            .unwrap();
        match stream.finish() {
            Err(LoadError::Entry { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected a line error, got {other:?}"),
        }
    }
}
