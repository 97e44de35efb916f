//! Cutting a station's byte stream into HJ 212 frames (`##` + 4-digit length + data + CRC +
//! CRLF), whatever the bytes are.
//!
//! Promise: every byte pushed ends up in exactly one frame or in one bad-frame report; a bad
//! frame (wrong length field, CRC mismatch, truncated, oversize, garbage) never costs the
//! frame behind it. After a bad frame the search for the next `##` starts just after the bad
//! frame's own `##` (connector contract §4), and a frame that meets a CRLF before its declared
//! end is given up as soon as that CRLF arrives, so a length field that is too long neither
//! swallows the next packet nor makes it wait for bytes that may never come. Memory is
//! bounded: at most one maximum-size frame is buffered.

use leadbridge_hj212::{Frame, FrameError};

/// What the stream gave.
#[derive(Debug)]
pub enum Framed {
    /// A frame whose length, CRC and terminator are right, with its bytes as received.
    Frame { frame: Frame, raw: Vec<u8> },
    /// Bytes that are not a frame; `skipped` counts them (the bad frame's and any garbage up to
    /// the next `##`).
    Bad { reason: String, skipped: usize },
}

/// The stream's state between reads.
pub struct Deframer {
    buffer: Vec<u8>,
    max_packet_bytes: usize,
    /// A bad frame given up: it is reported, with the garbage after it, when the next `##`
    /// (or the end of the stream) shows where it ends.
    pending: Option<String>,
    /// Bytes skipped since the last report.
    skipped: usize,
}

const HEADER: &[u8] = b"##";
/// `##` and the 4-digit length.
const PREFIX: usize = 6;

impl Deframer {
    pub fn new(max_packet_bytes: usize) -> Deframer {
        Deframer {
            buffer: Vec::with_capacity(max_packet_bytes.min(2048)),
            max_packet_bytes,
            pending: None,
            skipped: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Whether the bytes held so far begin a frame that is not complete yet.
    pub fn in_frame(&self) -> bool {
        self.buffer.starts_with(HEADER) || self.buffer == b"#"
    }

    /// The next frame or bad frame the buffered bytes hold, or `None` until more bytes come.
    pub fn next_framed(&mut self) -> Option<Framed> {
        loop {
            let Some(start) = find(&self.buffer, HEADER) else {
                // Keep a lone trailing '#': it may be half of the next header.
                let keep = usize::from(self.buffer.last() == Some(&b'#'));
                let dropped = self.buffer.len() - keep;
                self.buffer.drain(..dropped);
                self.skipped += dropped;
                return None;
            };
            // In a run of '#', the last two are the header: "###0101…" loses one stray byte,
            // not the frame. Which two is known once a byte other than '#' follows.
            if self.buffer[start..].iter().all(|&byte| byte == b'#') {
                return None;
            }
            let start = start
                + self.buffer[start..]
                    .iter()
                    .skip(2)
                    .take_while(|&&byte| byte == b'#')
                    .count();
            self.buffer.drain(..start);
            self.skipped += start;
            if self.pending.is_some() || self.skipped > 0 {
                return Some(self.report());
            }
            if self.buffer.len() < PREFIX {
                return None;
            }
            let Some(declared) = digits(&self.buffer[2..PREFIX]) else {
                let found = self.buffer[2..PREFIX].escape_ascii().to_string();
                self.give_up(format!(
                    "length field must be 4 decimal digits, found \"{found}\""
                ));
                continue;
            };
            let total = declared + leadbridge_hj212::FRAME_OVERHEAD;
            if total > self.max_packet_bytes {
                self.give_up(format!(
                    "length field announces a {total}-byte packet, more than the maximum of {}",
                    self.max_packet_bytes
                ));
                continue;
            }
            // Data segments hold no CRLF: one before the declared end ends this frame, however
            // the bytes were cut into reads.
            let held = self.buffer.len().min(total);
            if let Some(crlf) = find(&self.buffer[PREFIX..held], b"\r\n") {
                let actual = PREFIX + crlf + 2;
                if actual < total {
                    self.give_up(format!(
                        "truncated: a line of {actual} bytes ends before the {total} bytes \
                         the length field announces"
                    ));
                    continue;
                }
            }
            if self.buffer.len() < total {
                return None;
            }
            match Frame::parse_with_max_len(&self.buffer[..total], self.max_packet_bytes) {
                Ok(frame) => {
                    return Some(Framed::Frame {
                        frame,
                        raw: self.buffer.drain(..total).collect(),
                    })
                }
                Err(error) => self.give_up(describe(&error)),
            }
        }
    }

    /// Gives up the frame at the buffer's start; the search resumes after its `##`.
    fn give_up(&mut self, reason: String) {
        self.buffer.drain(..HEADER.len());
        self.skipped += HEADER.len();
        self.pending = Some(reason);
    }

    fn report(&mut self) -> Framed {
        let skipped = std::mem::take(&mut self.skipped);
        let reason = self
            .pending
            .take()
            .unwrap_or_else(|| format!("{skipped} byte(s) outside any frame"));
        Framed::Bad { reason, skipped }
    }

    /// At the end of the stream: what is held that is no frame, reported.
    pub fn finish(&mut self) -> Option<Framed> {
        let held = self.buffer.len();
        self.buffer.clear();
        self.skipped += held;
        if self.pending.is_none() && held > 0 {
            self.pending = Some(format!(
                "the connection ended inside a frame ({held} byte(s) held)"
            ));
        }
        (self.pending.is_some() || self.skipped > 0).then(|| self.report())
    }
}

fn describe(error: &FrameError) -> String {
    error.to_string()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn digits(field: &[u8]) -> Option<usize> {
    field.iter().try_fold(0usize, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + usize::from(byte - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(data: &str) -> Vec<u8> {
        Frame::encode_with_max_len(data, 1100).unwrap()
    }

    fn data(n: u32) -> String {
        format!(
            "QN=20261112{n:02}0005000;ST=32;CN=2061;PW=123456;MN=370303A00000000000000001;Flag=5;\
             CP=&&DataTime=20261112{n:02}0000;w01018-Avg=21.5,w01018-Flag=N&&"
        )
    }

    /// Pushes `stream` in pieces of `step` bytes; returns the frames' data and the bad reasons.
    fn run(stream: &[u8], step: usize) -> (Vec<String>, Vec<String>, usize) {
        let mut deframer = Deframer::new(1100);
        let (mut good, mut bad, mut skipped) = (Vec::new(), Vec::new(), 0);
        for piece in stream.chunks(step) {
            deframer.push(piece);
            while let Some(item) = deframer.next_framed() {
                match item {
                    Framed::Frame { frame, raw } => {
                        assert_eq!(Frame::parse_with_max_len(&raw, 1100).unwrap(), frame);
                        good.push(frame.data().to_owned());
                    }
                    Framed::Bad { reason, skipped: n } => {
                        bad.push(reason);
                        skipped += n;
                    }
                }
            }
        }
        if let Some(Framed::Bad { reason, skipped: n }) = deframer.finish() {
            bad.push(reason);
            skipped += n;
        }
        (good, bad, skipped)
    }

    #[test]
    fn bad_frames_never_cost_the_frame_behind_them_however_the_bytes_are_cut() {
        let good: Vec<Vec<u8>> = (1..=5).map(|n| frame(&data(n))).collect();
        let mut crc_error = frame(&data(6));
        let at = crc_error.len() - 3;
        crc_error[at] = if crc_error[at] == b'0' { b'1' } else { b'0' };
        let too_long = {
            let mut bytes = frame(&data(7));
            bytes[2..6].copy_from_slice(b"0900");
            bytes
        };
        let truncated = frame(&data(8))[..60].to_vec();
        let oversize = b"##9000QN=1".to_vec();
        let mut stream = Vec::new();
        stream.extend_from_slice(b"\x00\xffnoise#");
        stream.extend_from_slice(&good[0]);
        stream.extend_from_slice(&crc_error);
        stream.extend_from_slice(&good[1]);
        stream.extend_from_slice(&too_long);
        stream.extend_from_slice(&good[2]);
        stream.extend_from_slice(&truncated);
        stream.extend_from_slice(&good[3]);
        stream.extend_from_slice(&oversize);
        stream.extend_from_slice(b"#");
        stream.extend_from_slice(&good[4]);
        let expected: Vec<String> = (1..=5).map(data).collect();
        for step in [1, 2, 3, 7, 64, 500, stream.len()] {
            let (frames, bad, skipped) = run(&stream, step);
            assert_eq!(frames, expected, "step {step}");
            assert_eq!(bad.len(), 5, "step {step}: {bad:?}");
            assert!(bad[0].contains("outside any frame"), "{bad:?}");
            assert!(bad[1].contains("CRC mismatch"), "{bad:?}");
            assert!(bad[2].contains("truncated"), "{bad:?}");
            assert!(bad[3].contains("does not end"), "{bad:?}");
            assert!(bad[4].contains("more than the maximum"), "{bad:?}");
            let good_bytes: usize = good.iter().map(Vec::len).sum();
            assert_eq!(
                skipped + good_bytes,
                stream.len(),
                "step {step}: every byte counted"
            );
        }
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_reported_and_nothing_is_held() {
        let bytes = frame(&data(1));
        let (frames, bad, skipped) = run(&bytes[..bytes.len() - 1], 5);
        assert!(frames.is_empty());
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(skipped, bytes.len() - 1);
    }
}
