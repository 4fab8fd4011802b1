//! Bounded line reading for the offline tools. Input arrives in blocks of lines; a block is one
//! buffer holding its lines' bytes as read (no allocation or copy per line, and the buffer of a
//! finished block can be handed back for the next one), and no line can make us buffer more than
//! a fixed cap: an over-long line is kept as a marker and answered as malformed, its bytes
//! skipped.

use std::io::{self, Read};
use std::ops::Range;

/// Bytes asked of the source per read.
const READ_CHUNK: u64 = 256 * 1024;

/// One input line, or the fact that it could not be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Text(&'a str),
    TooLong,
    NotUtf8,
}

#[derive(Clone, Debug)]
enum Span {
    Text(Range<usize>),
    TooLong,
    NotUtf8,
}

/// A block of lines: their text in one string, and where each line lies in it.
#[derive(Debug, Default)]
pub struct Block {
    text: String,
    spans: Vec<Span>,
}

impl Block {
    /// The number of lines.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The lines, in input order (without their `\n` or `\r\n`).
    pub fn lines(&self) -> impl ExactSizeIterator<Item = Line<'_>> {
        self.spans.iter().map(|span| match span {
            // Spans are cut at ASCII bytes of `text`, so always on character boundaries.
            Span::Text(range) => Line::Text(self.text.get(range.clone()).unwrap_or_default()),
            Span::TooLong => Line::TooLong,
            Span::NotUtf8 => Line::NotUtf8,
        })
    }

    /// The block's buffer, emptied, for [`BlockReader::read_block`] to reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        let mut buffer = self.text.into_bytes();
        buffer.clear();
        buffer
    }
}

/// Cuts a byte stream into [`Block`]s.
pub struct BlockReader<R> {
    source: R,
    /// Bytes read past the last line of the previous block.
    pending: Vec<u8>,
    /// Inside an over-long line whose bytes are being dropped up to its newline.
    skipping: bool,
    eof: bool,
    max_lines: usize,
    max_bytes: usize,
    /// Bytes asked of the source per read ([`READ_CHUNK`]; smaller in tests, to split lines).
    chunk: u64,
}

impl<R: Read> BlockReader<R> {
    /// Blocks of up to `max_lines` lines of at most `max_bytes` bytes each (a trailing `\r`
    /// counts).
    pub fn new(source: R, max_lines: usize, max_bytes: usize) -> BlockReader<R> {
        BlockReader {
            source,
            pending: Vec::new(),
            skipping: false,
            eof: false,
            max_lines: max_lines.max(1),
            max_bytes,
            chunk: READ_CHUNK,
        }
    }

    /// [`BlockReader::new`] reading `chunk` bytes at a time, so tests can split lines across
    /// reads anywhere.
    #[cfg(test)]
    fn with_chunk(source: R, max_lines: usize, max_bytes: usize, chunk: u64) -> BlockReader<R> {
        BlockReader {
            chunk: chunk.max(1),
            ..BlockReader::new(source, max_lines, max_bytes)
        }
    }

    /// The next block, built in `buffer` (any contents are discarded; pass a finished block's
    /// [`Block::into_buffer`] to save an allocation). An empty block means the end of the input.
    ///
    /// Memory: the block keeps at most `max_lines` lines of at most `max_bytes` each, plus one
    /// read's worth of bytes.
    pub fn read_block(&mut self, buffer: Vec<u8>) -> io::Result<Block> {
        let mut data = buffer;
        data.clear();
        data.append(&mut self.pending);
        let mut spans = Vec::with_capacity(self.max_lines.min(8192));
        // `start`: where the current line begins; `scan`: where to look for its newline.
        let (mut start, mut scan) = (0, 0);
        loop {
            while spans.len() < self.max_lines {
                let Some(at) = data
                    .get(scan..)
                    .and_then(|rest| memchr::memchr(b'\n', rest))
                else {
                    scan = data.len();
                    break;
                };
                let end = scan + at;
                if self.skipping || end - start > self.max_bytes {
                    // Drop the line's bytes so they take no room (rare: a copy of the rest).
                    self.skipping = false;
                    data.drain(start..=end);
                    spans.push(Span::TooLong);
                } else {
                    let text_end = if end > start && data.get(end - 1) == Some(&b'\r') {
                        end - 1
                    } else {
                        end
                    };
                    spans.push(Span::Text(start..text_end));
                    start = end + 1;
                }
                scan = start;
            }
            if spans.len() == self.max_lines {
                self.pending
                    .extend_from_slice(data.get(start..).unwrap_or_default());
                data.truncate(start);
                break;
            }
            // What remains from `start` is an unfinished line: never keep more than the cap.
            if self.skipping || data.len() - start > self.max_bytes {
                self.skipping = true;
                data.truncate(start);
                scan = start;
            }
            if self.eof {
                if self.skipping {
                    self.skipping = false;
                    spans.push(Span::TooLong);
                } else if start < data.len() {
                    let end = data.len();
                    let text_end = if data.get(end - 1) == Some(&b'\r') {
                        end - 1
                    } else {
                        end
                    };
                    spans.push(Span::Text(start..text_end));
                }
                break;
            }
            let read = (&mut self.source).take(self.chunk).read_to_end(&mut data)?;
            self.eof = read == 0;
        }
        Ok(into_block(data, spans))
    }
}

/// Checks the block's UTF-8 once as a whole; only if that fails, line by line (a line that is
/// not UTF-8 becomes [`Span::NotUtf8`] and its bytes are left out).
fn into_block(data: Vec<u8>, mut spans: Vec<Span>) -> Block {
    match String::from_utf8(data) {
        Ok(text) => Block { text, spans },
        Err(error) => {
            let data = error.into_bytes();
            let mut text = String::with_capacity(data.len());
            for span in &mut spans {
                let Span::Text(range) = span else { continue };
                match data.get(range.clone()).map(std::str::from_utf8) {
                    Some(Ok(line)) => {
                        let from = text.len();
                        text.push_str(line);
                        *range = from..text.len();
                    }
                    _ => *span = Span::NotUtf8,
                }
            }
            Block { text, spans }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(block: &Block) -> Vec<String> {
        block
            .lines()
            .map(|l| match l {
                Line::Text(t) => t.to_owned(),
                Line::TooLong => "<long>".into(),
                Line::NotUtf8 => "<bin>".into(),
            })
            .collect()
    }

    /// Every block of `input`, read `chunk` bytes at a time (as `chunk` varies, lines, `\r\n`
    /// pairs and over-long lines are split across reads at every position).
    fn all_blocks(
        input: &[u8],
        chunk: u64,
        max_lines: usize,
        max_bytes: usize,
    ) -> Vec<Vec<String>> {
        let mut reader = BlockReader::with_chunk(input, max_lines, max_bytes, chunk);
        let mut blocks = Vec::new();
        let mut buffer = Vec::new();
        loop {
            let block = reader.read_block(buffer).unwrap();
            if block.is_empty() {
                return blocks;
            }
            blocks.push(shown(&block));
            buffer = block.into_buffer();
        }
    }

    #[test]
    fn lines_are_split_bounded_and_the_tail_is_kept() {
        let input = b"a\nbbbbbbbbbb\r\n\n\xff\xfe\ndd\r\neeeee\nffffff\nc";
        let expected = ["a", "<long>", "", "<bin>", "dd", "eeeee", "<long>", "c"];
        // Every read size: lines split across reads, or many lines in one read.
        for chunk in 1..=input.len() as u64 {
            assert_eq!(
                all_blocks(input, chunk, 10, 5),
                [expected],
                "read size {chunk}"
            );
        }
    }

    #[test]
    fn a_block_stops_at_max_lines_and_the_next_one_continues() {
        let input = b"1\n2\n3\n4\n5\n";
        for chunk in 1..=input.len() as u64 {
            assert_eq!(
                all_blocks(input, chunk, 2, 5),
                [vec!["1", "2"], vec!["3", "4"], vec!["5"]],
                "read size {chunk}"
            );
        }
    }

    #[test]
    fn edge_cases_agree_with_a_simple_split() {
        // Every input over a small alphabet up to length 6 (a multi-byte character included, so
        // reads also split inside one), against `split('\n')`.
        let alphabet: [&[u8]; 5] = [b"a", b"\n", b"\r", b"\xff", "é".as_bytes()];
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
        let mut frontier = inputs.clone();
        for _ in 0..6 {
            frontier = frontier
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| [s.as_slice(), c].concat()))
                .collect();
            inputs.extend(frontier.iter().cloned());
        }
        let max_bytes = 3;
        for input in inputs {
            let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
            if pieces.last().is_some_and(|p| p.is_empty()) {
                pieces.pop();
            }
            let expected: Vec<String> = pieces
                .iter()
                .map(|line| {
                    if line.len() > max_bytes {
                        "<long>".to_owned()
                    } else {
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        std::str::from_utf8(line).map_or("<bin>".to_owned(), str::to_owned)
                    }
                })
                .collect();
            for chunk in [1, 2, 3, 64] {
                for max_lines in [1, 2, 3] {
                    let blocks = all_blocks(&input, chunk, max_lines, max_bytes);
                    assert!(blocks.iter().all(|b| (1..=max_lines).contains(&b.len())));
                    assert_eq!(
                        blocks.concat(),
                        expected,
                        "{input:?} read size {chunk}, {max_lines} lines per block"
                    );
                }
            }
        }
    }

    #[test]
    fn a_block_never_holds_an_over_long_line() {
        // One line of 10 MB among short ones: the block keeps only the short ones' bytes.
        let mut input = b"x\n".to_vec();
        input.extend(std::iter::repeat_n(b'y', 10 << 20));
        input.extend_from_slice(b"\nz\n");
        let mut reader = BlockReader::new(&input[..], 8, 100);
        let block = reader.read_block(Vec::new()).unwrap();
        assert_eq!(shown(&block), ["x", "<long>", "z"]);
        // Never the 10 MB line: a few reads' worth at most.
        assert!(block.text.capacity() <= 4 * READ_CHUNK as usize);
    }
}
