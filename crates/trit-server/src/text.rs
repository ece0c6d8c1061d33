//! Byte-level helpers for streaming generated text: stop words and UTF-8 boundaries.

/// The first stop word in `text[from..]` (searching whole words that may start before
/// `from`): its byte offset and the word.
pub fn find_stop(text: &[u8], from: usize, stops: &[String]) -> Option<(usize, String)> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s_b = s.as_bytes();
            let start = from.min(text.len());
            text[start..].windows(s_b.len()).position(|w| w == s_b).map(|p| (start + p, s.clone()))
        })
        .min_by_key(|(p, _)| *p)
}

/// How many trailing bytes of `text` could be the start of a stop word (held back while
/// streaming, so that a stop word is never sent in part).
pub fn held_back_len(text: &[u8], stops: &[String]) -> usize {
    stops
        .iter()
        .map(|s| {
            let s = s.as_bytes();
            (1..s.len().min(text.len() + 1)).rev().find(|&k| text.ends_with(&s[..k])).unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Decode `bytes` as UTF-8 up to the last complete character (everything, lossily, when
/// `all`). Returns the text and how many bytes it used.
pub fn take_utf8(bytes: &[u8], all: bool) -> (String, usize) {
    if all {
        return (String::from_utf8_lossy(bytes).into_owned(), bytes.len());
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), bytes.len()),
        Err(e) if e.error_len().is_none() => {
            let n = e.valid_up_to();
            // An incomplete sequence at the end: wait for more, unless it can never complete.
            if bytes.len() - n < 4 {
                (String::from_utf8_lossy(&bytes[..n]).into_owned(), n)
            } else {
                (String::from_utf8_lossy(bytes).into_owned(), bytes.len())
            }
        }
        // Invalid bytes (random-weight models emit them): send them replaced, up to the
        // last possibly-incomplete tail.
        Err(_) => {
            let tail = incomplete_tail(bytes);
            let n = bytes.len() - tail;
            (String::from_utf8_lossy(&bytes[..n]).into_owned(), n)
        }
    }
}

/// Length of a trailing UTF-8 lead byte sequence that is not yet complete.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for k in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - k];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if need > k { k } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn stop_words() {
        assert_eq!(find_stop(b"hello world", 0, &s(&["wor", "lo"])), Some((3, "lo".into())));
        assert_eq!(find_stop(b"hello", 0, &s(&["x"])), None);
        assert_eq!(held_back_len(b"hello wo", &s(&["world"])), 2);
        assert_eq!(held_back_len(b"hello", &s(&["world"])), 0);
        assert_eq!(held_back_len(b"ab", &s(&[])), 0);
    }

    #[test]
    fn utf8_boundaries() {
        let e = "é".as_bytes();
        assert_eq!(take_utf8(&[b'a', e[0]], false), ("a".to_string(), 1));
        assert_eq!(take_utf8(&[b'a', e[0]], true).1, 2);
        assert_eq!(take_utf8(&[0xFF, b'a'], false), ("\u{FFFD}a".to_string(), 2));
        assert_eq!(take_utf8(&[0xFF, e[0]], false), ("\u{FFFD}".to_string(), 1));
    }
}
