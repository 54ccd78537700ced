//! Text from peers and local processes made inert before anyone sees it: capped in
//! length where it arrives, control characters escaped, so a device name cannot forge a
//! `destination:` line, move the cursor or hide a pairing code.

/// The longest device name, comment, user, namespace or claim kept (in characters).
pub const MAX_FIELD: usize = 128;

/// `s` capped at `max` characters (an ellipsis marks the cut) with every control
/// character escaped: C0 and C1 controls and DEL as `\xNN` (`\n`, `\r`, `\t`, `\e` for the
/// common ones), and the Unicode bidirectional overrides as `\u{NNNN}`, since they reorder
/// what a terminal shows. A backslash is doubled so an escape cannot be forged.
pub fn inert(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 2));
    for (n, c) in s.chars().enumerate() {
        if n >= max {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x1b' => out.push_str("\\e"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to `max` characters, nothing escaped: for peer text kept as it came (and
/// escaped when shown).
pub fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// [`inert`] with the default cap.
pub fn field(s: &str) -> String {
    inert(s, MAX_FIELD)
}

/// Bytes from the wire as inert text (invalid UTF-8 replaced, then escaped).
pub fn field_bytes(b: &[u8]) -> String {
    let cap = b.len().min(MAX_FIELD * 4);
    field(&String::from_utf8_lossy(&b[..cap]))
}

/// Text for a desktop notification body, which servers read as markup: `&`, `<` and
/// `>` escaped after [`inert`], so a peer string cannot add links, images or tags.
pub fn markup_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_long_text_capped() {
        assert_eq!(field("a\x1b[2Jb\r\nc"), "a\\e[2Jb\\r\\nc");
        assert_eq!(field("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(field("tab\there\u{7f}"), "tab\\there\\x7f");
        assert_eq!(field("back\\e"), "back\\\\e");
        let long = "x".repeat(1000);
        let capped = field(&long);
        assert_eq!(capped.chars().count(), MAX_FIELD + 1);
        assert!(capped.ends_with('…'));
        assert_eq!(field("plain name-1.lan"), "plain name-1.lan");
        assert_eq!(markup_escape("<a href=x>&"), "&lt;a href=x&gt;&amp;");
        for s in [field("\u{9b}x"), field_bytes(b"\xff\x1b\x00")] {
            assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
        }
    }
}
