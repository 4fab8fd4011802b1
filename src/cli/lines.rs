//! Bounded line reading for the offline tools: input arrives in blocks of lines, and no line
//! can make us buffer more than a fixed cap (an over-long line is kept as a marker and answered
//! as malformed, its bytes skipped).

use std::io::{self, BufRead};

/// One input line, or the fact that it was too long to keep.
#[derive(Debug)]
pub enum Line {
    Text(String),
    TooLong,
    NotUtf8,
}

/// Reads up to `max_lines` lines of at most `max_bytes` bytes each; an empty block means EOF.
pub fn read_block(
    reader: &mut impl BufRead,
    max_lines: usize,
    max_bytes: usize,
) -> io::Result<Vec<Line>> {
    let mut block = Vec::with_capacity(max_lines.min(8192));
    let mut buffer = Vec::new();
    while block.len() < max_lines {
        buffer.clear();
        let mut too_long = false;
        let mut saw_any = false;
        loop {
            let available = reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            saw_any = true;
            let (chunk, found_newline) = match memchr::memchr(b'\n', available) {
                Some(end) => (&available[..end], true),
                None => (available, false),
            };
            if !too_long {
                if buffer.len() + chunk.len() > max_bytes {
                    too_long = true;
                    buffer.clear();
                } else if buffer.is_empty() && found_newline {
                    // The whole line is in the reader's buffer (the usual case): one exact copy.
                    buffer = chunk.to_vec();
                } else {
                    buffer.extend_from_slice(chunk);
                }
            }
            let consumed = chunk.len() + usize::from(found_newline);
            reader.consume(consumed);
            if found_newline {
                break;
            }
        }
        if !saw_any {
            break;
        }
        if too_long {
            block.push(Line::TooLong);
            continue;
        }
        if buffer.last() == Some(&b'\r') {
            buffer.pop();
        }
        match String::from_utf8(std::mem::take(&mut buffer)) {
            Ok(text) => block.push(Line::Text(text)),
            Err(_) => block.push(Line::NotUtf8),
        }
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(block: &[Line]) -> Vec<String> {
        block
            .iter()
            .map(|l| match l {
                Line::Text(t) => t.clone(),
                Line::TooLong => "<long>".into(),
                Line::NotUtf8 => "<bin>".into(),
            })
            .collect()
    }

    #[test]
    fn lines_are_split_bounded_and_the_tail_is_kept() {
        let input = b"a\nbbbbbbbbbb\r\n\n\xff\xfe\ndd\r\neeeee\nffffff\nc";
        let expected = ["a", "<long>", "", "<bin>", "dd", "eeeee", "<long>", "c"];
        // A tiny reader buffer splits lines across fills; a large one holds whole lines.
        for capacity in [3, 64] {
            let mut reader = io::BufReader::with_capacity(capacity, &input[..]);
            let block = read_block(&mut reader, 10, 5).unwrap();
            assert_eq!(shown(&block), expected, "reader buffer {capacity}");
            assert!(read_block(&mut reader, 10, 5).unwrap().is_empty());
        }
    }

    #[test]
    fn a_block_stops_at_max_lines_and_the_next_one_continues() {
        let input = b"1\n2\n3\n4\n5\n";
        let mut reader = io::BufReader::with_capacity(4, &input[..]);
        assert_eq!(shown(&read_block(&mut reader, 2, 5).unwrap()), ["1", "2"]);
        assert_eq!(shown(&read_block(&mut reader, 2, 5).unwrap()), ["3", "4"]);
        assert_eq!(shown(&read_block(&mut reader, 2, 5).unwrap()), ["5"]);
        assert!(read_block(&mut reader, 2, 5).unwrap().is_empty());
    }
}
