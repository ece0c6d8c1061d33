//! GPT-2 byte-level alphabet: each byte maps to one printable Unicode character.
//!
//! Printable Latin-1 bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for themselves; the other 68
//! bytes take the code points 256, 257, … in byte order (so a space is `Ġ`, U+0120).

/// Whether a byte stands for itself.
fn is_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The 256 characters of the alphabet, indexed by byte.
pub(crate) fn alphabet() -> [char; 256] {
    let mut next = 256u32;
    std::array::from_fn(|b| {
        let b = b as u8;
        if is_printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("code points 256..324 are valid");
            next += 1;
            c
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_characters() {
        let a = alphabet();
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        assert_eq!(a[0], 'Ā');
        assert_eq!(a[b'A' as usize], 'A');
        assert_eq!(a[0xAD], 'Ń');
        let mut sorted = a.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }
}
