//! Turning a stream of generated token ids into a stream of text.
//!
//! Two problems sit between "one more token" and "one more piece of text":
//! a character may be split over several tokens (byte-level BPE tokens and
//! `<0xNN>` byte-fallback tokens carry raw UTF-8 bytes), and a stop string may
//! arrive spread over several pieces. [`StreamDecoder`] solves the first by
//! holding bytes back until they form whole characters; [`StopMatcher`] the
//! second by holding back any tail that could still become a stop string. In
//! both cases text, once emitted, is final: it is never retracted.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Incremental detokenizer that only ever emits whole characters.
///
/// Decoding token by token is wrong in general (decoders strip a leading
/// space, merge bytes, …), so each step decodes a short window: the ids of the
/// last emitted piece (the prefix, for context) plus the ids not emitted yet,
/// and emits what the window decodes to beyond the prefix. While the window's
/// text ends in U+FFFD the last character is incomplete, and nothing is
/// emitted until a later token completes it.
#[derive(Debug)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    skip_special: bool,
    /// The window: ids of the last emitted piece, then the pending ids.
    ids: Vec<u32>,
    /// Where the pending ids start in `ids`.
    read_offset: usize,
}

impl StreamDecoder {
    /// A decoder that leaves special tokens (`<|im_start|>`, …) out of the text,
    /// as an API response should.
    pub fn new(tokenizer: &Tokenizer) -> Self {
        Self::with_special_tokens(tokenizer, false)
    }

    /// A decoder that renders special tokens as text when `render_special` is true.
    pub fn with_special_tokens(tokenizer: &Tokenizer, render_special: bool) -> Self {
        Self {
            tokenizer: tokenizer.clone(),
            skip_special: !render_special,
            ids: Vec::new(),
            read_offset: 0,
        }
    }

    /// Adds one token; returns the newly completed text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let (prefix, full) = self.decode_window()?;
        if full.ends_with('\u{FFFD}') {
            return Ok(None); // an incomplete character: wait for its remaining bytes
        }
        Ok(self.emit(&prefix, &full))
    }

    /// Ends the stream: returns whatever is still held back (an incomplete
    /// character at the very end decodes to U+FFFD, as a full decode would).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let (prefix, full) = self.decode_window()?;
        // Last chance: if the decoder rewrote the prefix (see `emit`), give
        // whatever differs rather than lose the tail.
        let piece = if full.starts_with(prefix.as_str()) {
            self.emit(&prefix, &full)
        } else {
            Some(full[common_prefix_len(&prefix, &full)..].to_owned()).filter(|t| !t.is_empty())
        };
        self.ids.clear();
        self.read_offset = 0;
        Ok(piece)
    }

    /// Decodes the prefix alone and the whole window.
    fn decode_window(&self) -> Result<(String, String)> {
        let prefix = self
            .tokenizer
            .decode(&self.ids[..self.read_offset], self.skip_special)?;
        let full = self.tokenizer.decode(&self.ids, self.skip_special)?;
        Ok((prefix, full))
    }

    /// Emits the window's text beyond the prefix and slides the window so the
    /// just-emitted ids become the next prefix.
    fn emit(&mut self, prefix: &str, full: &str) -> Option<String> {
        // Decoding more ids only appends text in practice; should a decoder ever
        // rewrite the prefix, hold on (the text is emitted once it settles, at
        // the latest by `finish`) rather than emit something inconsistent.
        let new = full
            .strip_prefix(prefix)
            .filter(|new| !new.is_empty())?
            .to_owned();
        self.ids.drain(..self.read_offset);
        self.read_offset = self.ids.len();
        Some(new)
    }
}

/// Length in bytes of the longest common prefix of `a` and `b` (a char boundary of both).
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or_else(|| a.len().min(b.len()), |((at, _), _)| at)
}

/// Finds stop strings in streamed text and holds back any tail that might be
/// the beginning of one, so a stop string (or part of it) is never emitted.
///
/// Feed each new piece of text to [`push`](Self::push) and emit what it
/// returns; once it reports a stop, generation should end (the stop string and
/// anything after it are dropped). When the stream ends without a stop, emit
/// [`flush`](Self::flush) to release the held-back tail.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Received text not emitted yet: a possible start of a stop string.
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops`; empty strings are ignored.
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
            stopped: false,
        }
    }

    /// Adds `text`; returns the text that is now safe to emit and whether a
    /// stop string has been found (then the returned text ends just before it,
    /// and later calls return nothing).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.held.push_str(text);
        // Only the held text needs searching: everything emitted earlier was,
        // when emitted, neither a stop string nor the start of one.
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            self.stopped = true;
            self.held.truncate(at);
            return (std::mem::take(&mut self.held), true);
        }
        let keep = self.partial_stop_len();
        let safe = self.held[..self.held.len() - keep].to_owned();
        self.held.drain(..self.held.len() - keep);
        (safe, false)
    }

    /// Whether a stop string has been found.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Ends the stream: returns the held-back tail (nothing after a stop).
    pub fn flush(&mut self) -> String {
        if self.stopped {
            self.held.clear();
        }
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest tail of the held text that is a proper
    /// prefix of some stop string (always a character boundary of the text).
    fn partial_stop_len(&self) -> usize {
        let held = self.held.as_str();
        let partial = |stop: &String| {
            (1..stop.len())
                .rev()
                .filter(|&k| stop.is_char_boundary(k))
                .find(|&k| held.ends_with(&stop[..k]))
                .unwrap_or(0)
        };
        self.stops.iter().map(partial).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tokenizer::tests::{gpt2_spec, real_model_tokenizer, spm_spec};

    fn stream(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
        let mut decoder = StreamDecoder::new(tok);
        let mut pieces: Vec<String> = ids
            .iter()
            .filter_map(|&id| decoder.push(id).unwrap())
            .collect();
        pieces.extend(decoder.finish().unwrap());
        pieces
    }

    /// Streaming `text`'s ids one by one gives back exactly the full decode, in
    /// pieces that never contain a replacement character.
    fn check_stream(tok: &Tokenizer, text: &str) -> std::result::Result<(), TestCaseError> {
        let ids = tok.encode(text, false).unwrap();
        let pieces = stream(tok, &ids);
        prop_assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap());
        prop_assert!(pieces.iter().all(|p| !p.is_empty()), "{:?}", pieces);
        if !text.contains('\u{FFFD}') {
            prop_assert!(
                pieces.iter().all(|p| !p.contains('\u{FFFD}')),
                "{:?}",
                pieces
            );
        }
        Ok(())
    }

    const ALPHABET: &[char] = &[
        'a',
        'Z',
        ' ',
        '\n',
        '\t',
        '1',
        '.',
        'é',
        'ß',
        '日',
        '本',
        '語',
        '🚀',
        '👍',
        '\u{1F3FD}',
        '\u{200D}',
        'ё',
        'ا',
    ];

    fn mixed_text() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(ALPHABET), 0..40).prop_map(String::from_iter)
    }

    proptest! {
        #[test]
        fn byte_level_stream_is_exact(text in mixed_text()) {
            let tok = Tokenizer::from_gguf(gpt2_spec("smollm")).unwrap();
            check_stream(&tok, &text)?;
        }

        #[test]
        fn byte_fallback_stream_is_exact(text in mixed_text()) {
            let tok = Tokenizer::from_gguf(spm_spec(true)).unwrap();
            check_stream(&tok, &text)?;
        }

        #[test]
        fn real_model_stream_is_exact(text in mixed_text(), other in "\\PC{0,24}") {
            // The real vocabulary merges multi-byte characters in many ways.
            if let Some(tok) = real_model_tokenizer() {
                check_stream(&tok, &text)?;
                check_stream(&tok, &other)?;
            }
        }
    }

    #[test]
    fn split_character_is_held_until_complete() {
        let tok = Tokenizer::from_gguf(gpt2_spec("smollm")).unwrap();
        let ids = tok.encode("a🚀", false).unwrap();
        assert_eq!(ids.len(), 5, "one token per byte in this vocabulary");
        let mut decoder = StreamDecoder::new(&tok);
        assert_eq!(decoder.push(ids[0]).unwrap().as_deref(), Some("a"));
        for &id in &ids[1..4] {
            assert_eq!(decoder.push(id).unwrap(), None);
        }
        assert_eq!(decoder.push(ids[4]).unwrap().as_deref(), Some("🚀"));
        assert_eq!(decoder.finish().unwrap(), None);
        // An incomplete character at the very end comes out as U+FFFD.
        let mut decoder = StreamDecoder::new(&tok);
        assert_eq!(decoder.push(ids[1]).unwrap(), None);
        assert_eq!(decoder.finish().unwrap().as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn common_prefix_is_char_aligned() {
        assert_eq!(common_prefix_len("héllo", "hélp"), 4);
        assert_eq!(common_prefix_len("日本", "日本語"), 6);
        assert_eq!(common_prefix_len("é", "è"), 0);
    }

    #[test]
    fn special_tokens_are_skipped_unless_asked_for() {
        let tok = Tokenizer::from_gguf(spm_spec(true)).unwrap();
        let ids = tok.encode("hello<|im_end|>world", false).unwrap();
        assert_eq!(stream(&tok, &ids).concat(), "hello world");
        let mut decoder = StreamDecoder::with_special_tokens(&tok, true);
        let text: String = ids
            .iter()
            .filter_map(|&id| decoder.push(id).unwrap())
            .collect();
        assert_eq!(text, "hello<|im_end|> world");
        assert!(StreamDecoder::new(&tok).push(1_000_000).is_err());
    }

    fn run_stops(stops: &[&str], chunks: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for chunk in chunks {
            let (safe, stopped) = m.push(chunk);
            out.push_str(&safe);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(&m.flush());
        (out, m.stopped())
    }

    #[test]
    fn stop_strings_are_held_then_dropped() {
        let mut m = StopMatcher::new(vec!["STOP".into(), String::new()]);
        assert_eq!(m.push("Hello S"), ("Hello ".to_owned(), false));
        assert_eq!(m.push("TO"), (String::new(), false));
        assert_eq!(m.push("P! more"), (String::new(), true));
        assert!(m.stopped());
        assert_eq!(m.push("x"), (String::new(), true));
        assert_eq!(m.flush(), "");
        // A false alarm is released as soon as it cannot be a stop any more.
        assert_eq!(
            run_stops(&["STOP"], &["a S", "Tx"]),
            ("a STx".to_owned(), false)
        );
        assert_eq!(
            run_stops(&["STOP"], &["ends with ST"]),
            ("ends with ST".to_owned(), false)
        );
        assert_eq!(
            run_stops(&["🛑", "\n\n"], &["ok\n", "🛑 no"]),
            ("ok\n".to_owned(), true)
        );
        assert_eq!(run_stops(&["ab", "b"], &["xab"]), ("x".to_owned(), true));
        assert_eq!(
            run_stops(&[], &["free", " text"]),
            ("free text".to_owned(), false)
        );
    }

    fn chunked(text: &str, cuts: &[usize]) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c % (chars.len() + 1)).collect();
        bounds.extend([0, chars.len()]);
        bounds.sort_unstable();
        bounds
            .windows(2)
            .map(|w| chars[w[0]..w[1]].iter().collect())
            .collect()
    }

    proptest! {
        #[test]
        fn stop_matcher_emits_exactly_the_text_before_the_first_stop(
            text in "[ab🛑 ]{0,30}",
            stop in "[ab🛑]{1,3}",
            cuts in prop::collection::vec(0usize..40, 0..8),
        ) {
            let chunks = chunked(&text, &cuts);
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            let (out, stopped) = run_stops(&[&stop], &refs);
            match text.find(&stop) {
                Some(at) => prop_assert_eq!((out.as_str(), stopped), (&text[..at], true)),
                None => prop_assert_eq!((out.as_str(), stopped), (text.as_str(), false)),
            }
        }

        #[test]
        fn stop_matcher_never_emits_a_stop(
            text in "[abc ]{0,30}",
            stops in prop::collection::vec("[abc]{1,3}", 1..4),
            cuts in prop::collection::vec(0usize..40, 0..8),
        ) {
            let chunks = chunked(&text, &cuts);
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            let stop_refs: Vec<&str> = stops.iter().map(String::as_str).collect();
            let (out, stopped) = run_stops(&stop_refs, &refs);
            prop_assert!(text.starts_with(&out));
            prop_assert!(stops.iter().all(|s| !out.contains(s.as_str())));
            let rest = &text[out.len()..];
            prop_assert_eq!(stopped, stops.iter().any(|s| rest.starts_with(s.as_str())));
            prop_assert_eq!(stopped, stops.iter().any(|s| text.contains(s.as_str())));
        }
    }
}
