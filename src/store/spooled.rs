//! Lines read from the InfluxDB spool with their keys: text, or runs still compressed as they were stored.
//!
//! A store may keep a run of lines compressed on its own ([`pack`]): raw deflate blocks of
//! the lines, each ending in `\n`, closed by a sync flush (byte-aligned, not final), with the
//! text's CRC-32 and length and a hash of each line's point beside them (see
//! [`crate::store::Lines::push_point`]). Such pieces put one after another, between a gzip
//! header and a final empty block with the combined CRC-32 and length, are one gzip member (as
//! parallel gzip tools join their chunks), which every gzip reader takes. So the writer sends
//! a run that goes whole as the bytes it was stored as: nothing is inflated, copied line by
//! line or compressed again. Only a run cut by a request's edge, a rejected line or a removal
//! is inflated.

use std::io::Read;
use std::ops::Range;
use std::sync::OnceLock;

/// Lines read from the spool, oldest first, each with its key.
#[derive(Debug, Default, Clone)]
pub struct Spooled {
    keys: Vec<u64>,
    /// The text lines, joined by `\n` (a packed run adds nothing here).
    text: Vec<u8>,
    /// Whether any line is in `text` (an empty line leaves it empty).
    has_text: bool,
    /// Per line: where it is.
    places: Vec<Place>,
    runs: Vec<Run>,
    /// Every line as text, made on first need when some are packed.
    expanded: OnceLock<Text>,
}

#[derive(Debug, Clone, Copy)]
enum Place {
    /// Start and end in `text`.
    Text(usize, usize),
    /// The index of its run.
    Packed(usize),
}

#[derive(Debug, Clone)]
struct Run {
    /// The index of its first line.
    first: usize,
    count: usize,
    points: Vec<u32>,
    piece: Piece,
}

/// A run of lines compressed on its own (see the module's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// CRC-32 of the text (the lines, each ending in `\n`).
    pub crc: u32,
    /// Length of the text in bytes.
    pub len: u32,
    /// Raw deflate blocks ending in a sync flush.
    pub deflate: Vec<u8>,
}

#[derive(Debug, Default, Clone)]
struct Text {
    text: Vec<u8>,
    /// Start and end of each line in `text`.
    lines: Vec<(usize, usize)>,
}

impl PartialEq for Spooled {
    /// The same keys with the same lines, however they are held.
    fn eq(&self, other: &Self) -> bool {
        self.keys == other.keys && (0..self.len()).all(|i| self.line(i) == other.line(i))
    }
}

impl Eq for Spooled {}

impl Spooled {
    /// Add a line (without a `\n`) under its key.
    pub fn push(&mut self, key: u64, line: &[u8]) {
        self.push_joined(key, line);
    }

    /// Add `lines`, a run of lines joined by `\n`, keyed `first` onwards: one copy for all.
    pub fn push_joined(&mut self, first: u64, lines: &[u8]) {
        // Lines added after a look at every line make that look out of date.
        self.expanded.take();
        if self.has_text {
            self.text.push(b'\n');
        }
        self.has_text = true;
        let start = self.text.len();
        self.text.extend_from_slice(lines);
        let mut from = start;
        let ends = memchr::memchr_iter(b'\n', lines).map(|i| start + i).chain(std::iter::once(self.text.len()));
        for (key, end) in (first..).zip(ends) {
            self.keys.push(key);
            self.places.push(Place::Text(from, end));
            from = end + 1;
        }
    }

    /// Add a packed run of `points.len()` lines keyed `first` onwards: `piece` holds the
    /// lines ([`pack`]), `points` their points' hashes.
    pub fn push_packed(&mut self, first: u64, points: &[u32], piece: Piece) {
        self.expanded.take();
        let run = self.runs.len();
        self.runs.push(Run { first: self.keys.len(), count: points.len(), points: points.to_vec(), piece });
        self.keys.extend(first..first + points.len() as u64);
        self.places.extend(std::iter::repeat_n(Place::Packed(run), points.len()));
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Where to end a request of at most `i` lines so that no packed run is cut: `i`, or the
    /// start of the run it falls into, unless that is the first line.
    pub fn boundary(&self, i: usize) -> usize {
        match self.places.get(i) {
            Some(&Place::Packed(r)) if self.runs[r].first > 0 => self.runs[r].first,
            _ => i,
        }
    }

    /// The `i`th line's key.
    pub fn key(&self, i: usize) -> u64 {
        self.keys[i]
    }

    /// The keys of the lines in `range`.
    pub fn keys(&self, range: Range<usize>) -> Vec<u64> {
        self.keys[range].to_vec()
    }

    /// The `i`th line (a packed one from the runs inflated, see [`Self::expanded`]).
    pub fn line(&self, i: usize) -> &[u8] {
        match self.places[i] {
            Place::Text(start, end) => &self.text[start..end],
            Place::Packed(_) => {
                let all = self.expanded();
                let (start, end) = all.lines[i];
                &all.text[start..end]
            }
        }
    }

    /// The lines in `range` joined by `\n` (empty for an empty range).
    pub fn joined(&self, range: Range<usize>) -> &[u8] {
        if range.is_empty() {
            return &[];
        }
        match (self.places[range.start], self.places[range.end - 1]) {
            (Place::Text(start, _), Place::Text(_, end)) if self.runs.is_empty() => &self.text[start..end],
            _ => {
                let all = self.expanded();
                &all.text[all.lines[range.start].0..all.lines[range.end - 1].1]
            }
        }
    }

    /// Every line with its key, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        (0..self.len()).map(|i| (self.key(i), self.line(i)))
    }

    /// The first `limit` of these lines whose keys are not in `skip` (sorted ascending).
    pub fn without(&self, skip: &[u64], limit: usize) -> Spooled {
        let mut out = Spooled::default();
        for (key, line) in self.iter().filter(|(key, _)| skip.binary_search(key).is_err()).take(limit) {
            out.push(key, line);
        }
        out
    }

    /// The hashes of the points of the lines in `range`: a packed line's as stored, a text
    /// line's by `hash` (the same function that made the stored ones).
    pub fn point_hashes(&self, range: Range<usize>, hash: impl Fn(&[u8]) -> u32) -> Vec<u32> {
        range
            .map(|i| match self.places[i] {
                Place::Text(start, end) => hash(&self.text[start..end]),
                Place::Packed(r) => self.runs[r].points[i - self.runs[r].first],
            })
            .collect()
    }

    /// A request body of the lines in `range`, each ending in `\n`: one gzip member (packed
    /// runs that go whole as they were stored, the other lines compressed here at the fastest
    /// level), or plain text.
    pub fn body(&self, range: Range<usize>, gzip: bool) -> std::io::Result<Vec<u8>> {
        if !gzip {
            let joined = self.joined(range.clone());
            let mut body = Vec::with_capacity(joined.len() + 1);
            body.extend_from_slice(joined);
            if !range.is_empty() {
                body.push(b'\n');
            }
            return Ok(body);
        }
        let mut member = Member::new();
        let mut i = range.start;
        while i < range.end {
            match self.places[i] {
                Place::Packed(r) if self.runs[r].first == i && i + self.runs[r].count <= range.end => {
                    member.add(&self.runs[r].piece);
                    i += self.runs[r].count;
                }
                // A stretch of text lines is one slice of `text`.
                Place::Text(start, _) => {
                    let mut j = i;
                    while j + 1 < range.end && matches!(self.places[j + 1], Place::Text(..)) {
                        j += 1;
                    }
                    let Place::Text(_, end) = self.places[j] else { unreachable!("checked above") };
                    member.add(&pack(&self.text[start..end])?);
                    i = j + 1;
                }
                // A run cut by the range: its lines in the range, from this run alone inflated.
                Place::Packed(r) => {
                    let run = &self.runs[r];
                    let text = text_of(&run.piece, run.count);
                    let end = (run.first + run.count).min(range.end);
                    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').skip(i - run.first).take(end - i).collect();
                    member.add(&pack(&lines.join(&b'\n'))?);
                    i = end;
                }
            }
        }
        Ok(member.finish())
    }

    /// Every line as text, the packed runs inflated (once; a damaged one as [`text_of`] says).
    fn expanded(&self) -> &Text {
        self.expanded.get_or_init(|| {
            let mut all = Text::default();
            for (i, place) in self.places.iter().enumerate() {
                match *place {
                    Place::Text(start, end) => {
                        let at = all.text.len();
                        all.text.extend_from_slice(&self.text[start..end]);
                        all.lines.push((at, all.text.len()));
                        all.text.push(b'\n');
                    }
                    Place::Packed(r) if self.runs[r].first == i => {
                        let run = &self.runs[r];
                        let at = all.text.len();
                        let inflated = text_of(&run.piece, run.count);
                        all.text.extend_from_slice(&inflated);
                        let mut from = at;
                        for end in memchr::memchr_iter(b'\n', &inflated) {
                            all.lines.push((from, at + end));
                            from = at + end + 1;
                        }
                    }
                    Place::Packed(_) => {}
                }
            }
            all
        })
    }
}

/// The deflate block that ends a stream: final, fixed codes, nothing but the end code.
const LAST_BLOCK: [u8; 2] = [0x03, 0x00];

thread_local! {
    /// A compressor to reset rather than make anew: making one (its tables set up on the heap)
    /// cost more than compressing the 512 lines of a row.
    static DEFLATE: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::fast(), false));
}

/// `lines` (joined by `\n`), each ending in `\n`, compressed on their own at the fastest level.
pub fn pack(lines: &[u8]) -> std::io::Result<Piece> {
    let deflate = DEFLATE.with_borrow_mut(|c| {
        // A fresh stream, whatever the last call left (even a failed one).
        c.reset();
        let mut out = Vec::with_capacity(lines.len() / 8 + 64);
        deflate_into(c, lines, &mut out, flate2::FlushCompress::None)?;
        // A sync flush ends the blocks on a byte without a final one, so pieces can follow.
        deflate_into(c, b"\n", &mut out, flate2::FlushCompress::Sync)?;
        Ok::<_, std::io::Error>(out)
    })?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(lines);
    crc.update(b"\n");
    Ok(Piece { crc: crc.finalize(), len: (lines.len() + 1) as u32, deflate })
}

/// Compress all of `input` onto `out`, growing it as needed; with a flush, until the
/// compressor has written all it holds (it leaves room in `out`).
fn deflate_into(
    c: &mut flate2::Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: flate2::FlushCompress,
) -> std::io::Result<()> {
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let before = c.total_in();
        c.compress_vec(input, out, flush).map_err(std::io::Error::other)?;
        input = &input[(c.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
    }
}

/// The text of a piece: the lines, each ending in `\n`.
fn inflate(piece: &Piece) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::with_capacity(piece.len as usize);
    flate2::read::DeflateDecoder::new(piece.deflate.as_slice().chain(&LAST_BLOCK[..])).read_to_end(&mut text)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&text);
    if text.len() != piece.len as usize || crc.finalize() != piece.crc {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a packed run does not inflate to its text"));
    }
    Ok(text)
}

/// The text of a piece of `count` lines; one that does not inflate to that many (a damaged
/// store) gives as many empty lines, which a write target passes over (VictoriaMetrics answers
/// 204 to a body of blank lines), so the lines around them go on (the readings stay in the
/// embedded store).
pub fn text_of(piece: &Piece, count: usize) -> Vec<u8> {
    match inflate(piece) {
        Ok(text) if memchr::memchr_iter(b'\n', &text).count() == count => text,
        Ok(_) | Err(_) => {
            tracing::error!(lines = count, "a packed run of the InfluxDB spool does not inflate: its lines are left empty");
            vec![b'\n'; count]
        }
    }
}

/// One gzip member made of pieces.
struct Member {
    body: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl Member {
    fn new() -> Self {
        // Magic, deflate, no flags, no time, no extra flags, unknown system.
        let body = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        Self { body, crc: crc32fast::Hasher::new(), len: 0 }
    }

    fn add(&mut self, piece: &Piece) {
        self.body.extend_from_slice(&piece.deflate);
        self.crc.combine(&crc32fast::Hasher::new_with_initial_len(piece.crc, u64::from(piece.len)));
        self.len += u64::from(piece.len);
    }

    fn finish(mut self) -> Vec<u8> {
        self.body.extend_from_slice(&LAST_BLOCK);
        // The length in the trailer is modulo 2^32, as gzip defines it.
        self.body.extend_from_slice(&self.crc.finalize().to_le_bytes());
        self.body.extend_from_slice(&(self.len as u32).to_le_bytes());
        self.body
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::{pack, text_of, Spooled};

    fn gunzip(body: &[u8]) -> String {
        let mut text = String::new();
        if body.is_empty() {
            return text;
        }
        // One member: a reader that stops after the first sees everything.
        flate2::read::GzDecoder::new(body).read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn a_reused_compressor_packs_each_piece_as_a_fresh_one_would() {
        // Bytes that hardly compress, longer than the output first reserved; then short text.
        let mut noise = Vec::with_capacity(300_000);
        let mut x: u32 = 1;
        while noise.len() < 300_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            noise.push(b' ' + (x % 90) as u8);
        }
        let pieces: Vec<&[u8]> = vec![&noise, b"a x=1 1\nb x=2 2", b"", &noise[..1000]];
        let here: Vec<_> = pieces.iter().map(|p| pack(p).unwrap()).collect();
        for (piece, packed) in pieces.iter().zip(&here) {
            let mut want = piece.to_vec();
            want.push(b'\n');
            let count = want.iter().filter(|&&b| b == b'\n').count();
            assert_eq!(text_of(packed, count), want);
            // A thread's first compressor is a new one.
            let owned = piece.to_vec();
            let fresh = std::thread::spawn(move || pack(&owned).unwrap()).join().unwrap();
            assert_eq!(packed.deflate, fresh.deflate, "a piece of {} bytes", piece.len());
        }
    }

    #[test]
    fn spooled_lines_keep_their_keys_and_runs_of_them_are_one_slice() {
        let mut s = Spooled::default();
        assert!(s.is_empty());
        s.push_joined(7, b"a x=1 1\nb x=2 2");
        s.push(12, b"c x=3 3");
        s.push_joined(13, b"d x=4 4");
        assert_eq!(s.len(), 4);
        assert_eq!(s.keys(0..4), vec![7, 8, 12, 13]);
        assert_eq!(s.line(0), b"a x=1 1");
        assert_eq!(s.line(1), b"b x=2 2");
        assert_eq!(s.line(3), b"d x=4 4");
        assert_eq!(s.joined(1..3), b"b x=2 2\nc x=3 3");
        assert_eq!(s.joined(0..4), b"a x=1 1\nb x=2 2\nc x=3 3\nd x=4 4");
        assert_eq!(s.joined(2..2), b"");
        assert_eq!(s.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![7, 8, 12, 13]);
    }

    #[test]
    fn lines_without_the_ones_in_flight_keep_their_keys_up_to_the_limit() {
        let mut s = Spooled::default();
        s.push_joined(1, b"a\nb\nc\nd");
        s.push_joined(9, b"e\nf");
        let lines = |s: &Spooled| s.iter().map(|(k, l)| (k, String::from_utf8(l.to_vec()).unwrap())).collect::<Vec<_>>();
        let all = lines(&s);
        assert_eq!(lines(&s.without(&[], 10)), all);
        // The batch in flight is the head: what follows it, as many as the limit allows.
        assert_eq!(lines(&s.without(&[1, 2], 3)), all[2..5]);
        // Keys skipped anywhere.
        let rest = s.without(&[2, 4, 10], 10);
        assert_eq!(lines(&rest), vec![all[0].clone(), all[2].clone(), all[4].clone()]);
        assert_eq!(rest.joined(0..3), b"a\nc\ne");
        assert!(s.without(&[1, 2, 3, 4, 9, 10], 10).is_empty());
        assert!(s.without(&[], 0).is_empty());
    }

    /// Text, a packed run, text, a packed run: as lines, and as bodies cut anywhere.
    fn mixed() -> (Spooled, Vec<(u64, &'static str)>) {
        let mut s = Spooled::default();
        s.push_joined(1, b"a x=1 1\nb x=2 2");
        s.push_packed(3, &[30, 40, 50], pack(b"c x=3 3\nd x=4 4\ne x=5 5").unwrap());
        s.push(9, b"f x=6 6");
        s.push_packed(10, &[100, 110], pack(b"g x=7 7\nh x=8 8").unwrap());
        let lines = vec![
            (1, "a x=1 1"),
            (2, "b x=2 2"),
            (3, "c x=3 3"),
            (4, "d x=4 4"),
            (5, "e x=5 5"),
            (9, "f x=6 6"),
            (10, "g x=7 7"),
            (11, "h x=8 8"),
        ];
        (s, lines)
    }

    #[test]
    fn packed_runs_read_as_the_lines_they_hold() {
        let (s, lines) = mixed();
        assert_eq!(s.len(), 8);
        let read: Vec<(u64, String)> = s.iter().map(|(k, l)| (k, String::from_utf8(l.to_vec()).unwrap())).collect();
        assert_eq!(read, lines.iter().map(|(k, l)| (*k, l.to_string())).collect::<Vec<_>>());
        assert_eq!(s.joined(1..4), b"b x=2 2\nc x=3 3\nd x=4 4");
        assert_eq!(s.point_hashes(0..8, |l| l[0] as u32), vec![b'a' as u32, b'b' as u32, 30, 40, 50, b'f' as u32, 100, 110]);
        let mut text_only = Spooled::default();
        for (k, l) in &lines {
            text_only.push(*k, l.as_bytes());
        }
        assert_eq!(s, text_only, "equal lines are equal however they are held");
    }

    #[test]
    fn bodies_are_the_lines_each_ending_in_a_newline_whole_runs_or_cut() {
        let (s, lines) = mixed();
        for start in 0..=s.len() {
            for end in start..=s.len() {
                let want: String = lines[start..end].iter().map(|(_, l)| format!("{l}\n")).collect();
                assert_eq!(gunzip(&s.body(start..end, true).unwrap()), want, "gzip {start}..{end}");
                assert_eq!(String::from_utf8(s.body(start..end, false).unwrap()).unwrap(), want, "plain {start}..{end}");
            }
        }
        // A whole run goes as it was stored, and nothing is inflated for it or for a cut one.
        let (s, _) = mixed();
        let run = pack(b"c x=3 3\nd x=4 4\ne x=5 5").unwrap();
        let body = s.body(2..5, true).unwrap();
        assert_eq!(body[10..body.len() - 10], run.deflate, "the piece as stored, between header and last block");
        assert_eq!(gunzip(&s.body(3..7, true).unwrap()), "d x=4 4\ne x=5 5\nf x=6 6\ng x=7 7\n");
        assert!(s.expanded.get().is_none(), "nothing was inflated for all");
    }

    #[test]
    fn lines_added_after_a_look_at_the_packed_ones_are_seen() {
        let mut s = Spooled::default();
        s.push_packed(1, &[1], pack(b"a x=1 1").unwrap());
        assert_eq!(s.line(0), b"a x=1 1");
        s.push_packed(2, &[2], pack(b"b x=2 2").unwrap());
        s.push(3, b"c x=3 3");
        assert_eq!(s.joined(0..3), b"a x=1 1\nb x=2 2\nc x=3 3");
    }

    #[test]
    fn a_run_that_does_not_inflate_gives_empty_lines_and_leaves_the_others() {
        let mut s = Spooled::default();
        s.push_packed(1, &[1, 2], super::Piece { crc: 0, len: 4, deflate: b"not deflate".to_vec() });
        s.push(3, b"c x=3 3");
        assert_eq!(s.line(0), b"");
        assert_eq!(s.line(1), b"");
        assert_eq!(s.line(2), b"c x=3 3");
    }
}
