//! Writing JSON strings fast. serde_json escapes a string one byte at a time; a history
//! of long texts is nearly all string, written on every turn, and nearly all of it needs
//! no escape. Texts up to [`SIMD_MAX`] go through `json-escape-simd` (sonic-rs's SIMD
//! kernel); longer ones are scanned eight bytes at a time here, the runs that need no
//! escape copied whole. Either way the output is what serde_json writes for the same
//! string.

/// The longest text written by `json-escape-simd`. It reserves six times the text
/// (room for the worst case) before writing, which for a text of the largest size a
/// request may carry would hold megabytes for as long as the answer is; up to here that
/// is a few KiB, and past it the copying, not the scanning, is most of the cost.
const SIMD_MAX: usize = 4096;

/// Appends `text` to `out` as a JSON string, quotes included.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    if text.len() <= SIMD_MAX {
        json_escape_simd::escape_into(text, out);
    } else {
        write_long_str(out, text);
    }
}

/// [`write_str`] for long texts: reserves only what it writes.
fn write_long_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0; // the start of the run not yet written
    let mut at = 0;
    while at < bytes.len() {
        at += plain_prefix(&bytes[at..]);
        let Some(&byte) = bytes.get(at) else {
            break;
        };
        let escape = escape_of(byte);
        if escape.is_empty() && byte >= 0x20 {
            at += 1;
            continue;
        }
        out.extend_from_slice(&bytes[run..at]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        at += 1;
        run = at;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Appends `"name":` and `text` as a JSON string: one member of an object. `name` is
/// written as it is (a field name of ours, which needs no escape).
pub fn write_member(out: &mut Vec<u8>, name: &str, text: &str) {
    out.reserve(name.len() + 3);
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    write_str(out, text);
}

/// A value that writes itself as JSON, by hand: the bytes serde writes for it, faster
/// (for what is written on every turn: requests to the provider, answers).
pub trait WriteJson {
    /// Appends the value as JSON.
    fn write_json(&self, out: &mut Vec<u8>);

    /// Roughly the bytes [`write_json`](Self::write_json) writes, for making room
    /// ahead (0 where not worth estimating).
    fn size_hint(&self) -> usize {
        0
    }
}

/// Appends `id` as a JSON string, hyphenated and lower case (as serde writes it).
pub fn write_uuid(out: &mut Vec<u8>, id: uuid::Uuid) {
    let mut buffer = uuid::Uuid::encode_buffer();
    out.push(b'"');
    out.extend_from_slice(id.hyphenated().encode_lower(&mut buffer).as_bytes());
    out.push(b'"');
}

/// Appends `number` as JSON.
pub fn write_u64(out: &mut Vec<u8>, number: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
}

/// Appends `items` as a JSON array, each written by `write`.
pub fn write_array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

/// An object whose first member, `name`, is written by `write` (about `hint` bytes), and
/// whose other members are those of `rest`, an object's JSON as serde writes it (`{}`
/// included): the bulk of a body written by hand, the rest by serde.
pub fn object_led_by(
    name: &str,
    hint: usize,
    write: impl FnOnce(&mut Vec<u8>),
    rest: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(hint + name.len() + rest.len() + 8);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    write(&mut out);
    match rest.strip_prefix(b"{") {
        Some(members) if members != b"}" => {
            out.push(b',');
            out.extend_from_slice(members);
        }
        _ => out.push(b'}'),
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The short escape of a byte, if it has one (a control byte without one is `\u00XX`).
fn escape_of(byte: u8) -> &'static [u8] {
    match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        _ => b"",
    }
}

/// How many leading bytes, in whole blocks of 32 and then of 8, surely need no escape.
fn plain_prefix(bytes: &[u8]) -> usize {
    let mut plain = 0;
    for block in bytes.chunks_exact(32) {
        if block.chunks_exact(8).fold(0, |any, word| any | flags(word)) != 0 {
            break;
        }
        plain += 32;
    }
    for word in bytes[plain..].chunks_exact(8) {
        if flags(word) != 0 {
            break;
        }
        plain += 8;
    }
    plain
}

/// Non-zero if any of eight bytes may need an escape: a quote, a backslash or a
/// control byte (below 0x20). It may flag a word that needs none (its bytes are then
/// looked at one by one), never miss one that does.
fn flags(word: &[u8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut eight = [0u8; 8];
    eight.copy_from_slice(word);
    let w = u64::from_le_bytes(eight);
    // A byte of `x` is zero, or below `n` (n <= 0x80), where this has its high bit set.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let control = below(w, 0x20);
    let quote = below(w ^ (ONES * u64::from(b'"')), 1);
    let backslash = below(w ^ (ONES * u64::from(b'\\')), 1);
    control | quote | backslash
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `text` written by `write_str` (the SIMD kernel, below `SIMD_MAX`) and by the
    /// loop for long texts; both must agree with serde_json.
    fn to_string(text: &str) -> String {
        let write = |writer: fn(&mut Vec<u8>, &str)| {
            let mut out = Vec::new();
            writer(&mut out, text);
            String::from_utf8(out).unwrap()
        };
        let (short, long) = (write(write_str), write(write_long_str));
        assert_eq!(short, long, "the two writers differ on {text:?}");
        short
    }

    #[test]
    fn every_byte_that_needs_an_escape_gets_the_one_serde_json_writes() {
        for code in 0u32..0x80 {
            let c = char::from_u32(code).unwrap();
            for text in [
                c.to_string(),
                format!("abcdefgh{c}ijklmnop"),
                format!("{c}{c}1234567"),
            ] {
                assert_eq!(to_string(&text), serde_json::to_string(&text).unwrap());
            }
        }
    }

    #[test]
    fn long_plain_texts_and_multibyte_characters_pass_unchanged() {
        for text in ["", "x", &"x".repeat(1000), "été 🦀 日本語 — \u{7f}\u{80}"] {
            assert_eq!(to_string(text), serde_json::to_string(text).unwrap());
        }
    }

    #[test]
    fn a_long_text_is_written_whole_without_room_for_six_times_it() {
        let text = format!("{}\"{}", "x".repeat(SIMD_MAX), "é".repeat(500_000));
        let mut out = Vec::new();
        write_str(&mut out, &text);
        assert_eq!(out, serde_json::to_vec(&text).unwrap());
        assert!(
            out.capacity() < 3 * text.len(),
            "{} for {}",
            out.capacity(),
            text.len()
        );
    }

    #[test]
    fn an_object_led_by_a_written_member_keeps_the_others_or_has_none() {
        let lead = |rest: &[u8]| {
            let out = object_led_by("a", 0, |out| out.extend_from_slice(b"[1]"), rest);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(lead(b"{}"), r#"{"a":[1]}"#);
        assert_eq!(lead(br#"{"b":2,"c":"}"}"#), r#"{"a":[1],"b":2,"c":"}"}"#);
    }

    proptest! {
        #[test]
        fn any_text_is_written_as_serde_json_writes_it(text in "(?s).{0,80}") {
            prop_assert_eq!(to_string(&text), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn any_mix_of_escapes_and_plain_runs_is_written_as_serde_json_writes_it(
            parts in prop::collection::vec(prop_oneof![
                Just("\"".to_owned()), Just("\\".to_owned()), Just("\n".to_owned()),
                Just("\u{1}".to_owned()), Just("\u{1f}".to_owned()), "[a-z é]{0,20}",
            ], 0..20),
        ) {
            let text = parts.concat();
            prop_assert_eq!(to_string(&text), serde_json::to_string(&text).unwrap());
        }
    }
}
