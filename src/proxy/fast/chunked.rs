//! Where a chunked body ends, found without changing a byte of it.

/// Follows a chunked body (RFC 9112 §7.1) through the bytes fed to it, to find where it ends.
/// The bytes themselves are passed on unchanged.
#[derive(Default)]
pub(super) struct ChunkedEnd {
    state: ChunkState,
    /// A chunk-size or trailer line split across reads.
    line: Vec<u8>,
}

#[derive(Default, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data; how many of its bytes were seen.
    DataEnd(u8),
    Trailer,
    Done,
    /// Malformed: stays so.
    Failed,
}

/// Longest chunk-size or trailer line followed.
const MAX_CHUNK_LINE: usize = 8 * 1024;

impl ChunkedEnd {
    /// Feed the next bytes; `Ok(Some(n))`: the body ends after the first `n` of them.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        let result = self.follow(bytes);
        if result.is_err() {
            self.state = ChunkState::Failed;
        }
        result
    }

    fn follow(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        if let ChunkState::Failed = self.state {
            return Err(());
        }
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                ChunkState::Size | ChunkState::Trailer => {
                    let rest = &bytes[i..];
                    let (take, complete) = match rest.iter().position(|&b| b == b'\n') {
                        Some(nl) => (nl + 1, true),
                        None => (rest.len(), false),
                    };
                    if self.line.len() + take > MAX_CHUNK_LINE {
                        return Err(());
                    }
                    self.line.extend_from_slice(&rest[..take]);
                    i += take;
                    if !complete {
                        continue;
                    }
                    self.state = match self.state {
                        // (httparse reads an empty line as size 0.)
                        ChunkState::Size if !self.line[0].is_ascii_hexdigit() => return Err(()),
                        ChunkState::Size => match httparse::parse_chunk_size(&self.line) {
                            Ok(httparse::Status::Complete((_, 0))) => ChunkState::Trailer,
                            Ok(httparse::Status::Complete((_, n))) => ChunkState::Data(n),
                            _ => return Err(()),
                        },
                        _ if self.line == b"\r\n" => ChunkState::Done,
                        _ if self.line.ends_with(b"\r\n") => ChunkState::Trailer,
                        _ => return Err(()),
                    };
                    self.line.clear();
                    if let ChunkState::Done = self.state {
                        return Ok(Some(i));
                    }
                }
                ChunkState::Data(n) => {
                    let take = (bytes.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd(0)
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd(seen) => {
                    if bytes[i] != b"\r\n"[usize::from(seen)] {
                        return Err(());
                    }
                    i += 1;
                    self.state = if seen == 1 {
                        ChunkState::Size
                    } else {
                        ChunkState::DataEnd(1)
                    };
                }
                ChunkState::Done => return Ok(Some(i)),
                ChunkState::Failed => return Err(()),
            }
        }
        Ok(matches!(self.state, ChunkState::Done).then_some(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(chunks: &[&[u8]]) -> Result<Option<usize>, ()> {
        let mut c = ChunkedEnd::default();
        let mut last = Ok(None);
        for chunk in chunks {
            last = c.feed(chunk);
            if !matches!(last, Ok(None)) {
                return last;
            }
        }
        last
    }

    /// Random chunked bodies (sizes, hex case, extensions, trailers) cut into random reads: the
    /// end is found at the same byte whatever the cuts.
    #[test]
    fn chunked_end_does_not_depend_on_how_reads_cut_the_body() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9112);
        for _ in 0..2_000 {
            let mut body = Vec::new();
            for _ in 0..rng.random_range(0..5) {
                let n: usize = rng.random_range(1..300);
                let size = if rng.random() {
                    format!("{n:x}")
                } else {
                    format!("{n:X}")
                };
                body.extend_from_slice(size.as_bytes());
                if rng.random_bool(0.3) {
                    body.extend_from_slice(b";name=\"v;\\\"x\"");
                }
                body.extend_from_slice(b"\r\n");
                body.extend((0..n).map(|i| b"\r\n0;"[i % 4]));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            if rng.random_bool(0.3) {
                body.extend_from_slice(b"x-sum: 1\r\n");
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let mut cuts: Vec<usize> = (0..rng.random_range(0..8))
                .map(|_| rng.random_range(0..=body.len()))
                .collect();
            cuts.push(body.len());
            cuts.sort_unstable();
            let mut c = ChunkedEnd::default();
            let (mut from, mut found) = (0, None);
            for cut in cuts {
                match c.feed(&body[from..cut]) {
                    Ok(None) => from = cut,
                    Ok(Some(n)) => {
                        found = Some(from + n);
                        break;
                    }
                    Err(()) => panic!("valid body refused: {:?}", String::from_utf8_lossy(&body)),
                }
            }
            assert_eq!(found, Some(end), "{:?}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn chunked_end_is_found_across_any_split() {
        let body = b"4;ext=1\r\nRust\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        assert_eq!(ends(&[body]), Ok(Some(end)));
        for split in 1..body.len() {
            let (a, b) = body.split_at(split);
            let got = ends(&[a, b]);
            if split >= end {
                assert_eq!(got, Ok(Some(end)), "split at {split}");
            } else {
                assert_eq!(got, Ok(Some(end - split)), "split at {split}");
            }
        }
        let mut c = ChunkedEnd::default();
        for (i, b) in body.iter().enumerate() {
            let r = c.feed(std::slice::from_ref(b));
            if i + 1 == end {
                assert_eq!(r, Ok(Some(1)));
                break;
            }
            assert_eq!(r, Ok(None), "byte {i}");
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"4\r\nRustXX",
            b"4\nRust\r\n",
            b"0\r\nbad trailer\n",
            b"fffffffffffffffff\r\n",
        ] {
            assert_eq!(ends(&[bad]), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
