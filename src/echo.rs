//! Bounded, escaped echoes of caller-supplied values. Anything a request
//! carries (names, ids, paths, parameter values) may be huge or hold
//! newlines; echoed whole it overflows gRPC's metadata limit (the status
//! message travels in a header, so the caller sees RESOURCE_EXHAUSTED instead
//! of our INVALID_ARGUMENT), floods the log, or forges log lines. Every such
//! value goes into a message or a log line through `echo`.

use std::fmt;

/// How many bytes of a value are shown; the rest is summarised by length.
pub const ECHO_MAX: usize = 128;

/// A request value as it appears in messages: quoted and escaped like
/// `{:?}`, cut to [`ECHO_MAX`] bytes (on a character boundary), and when cut
/// followed by `… (N bytes)`, so the reader knows it was cut and how long it
/// was.
pub struct Echo<'a>(pub &'a str);

/// Shorthand for `Echo(value)`.
pub fn echo(value: &str) -> Echo<'_> {
    Echo(value)
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value.len() <= ECHO_MAX {
            return write!(f, "{value:?}");
        }
        let mut cut = ECHO_MAX;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        write!(f, "{:?}… ({} bytes)", &value[..cut], value.len())
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Caps a whole message (a status message or a log line built from several
/// parts) at `max` bytes, on a character boundary, as a last line of defence
/// behind `echo`: no caller value can make it longer.
pub fn cap_message(mut message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let mut cut = max.saturating_sub(32);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let total = message.len();
    message.truncate(cut);
    message.push_str(&format!("… (message cut, {total} bytes)"));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_and_escaped() {
        assert_eq!(echo("pvc-1").to_string(), "\"pvc-1\"");
        assert_eq!(echo("a\nb").to_string(), "\"a\\nb\"");
        assert_eq!(echo("").to_string(), "\"\"");
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let long = "x".repeat(1 << 20);
        let shown = echo(&long).to_string();
        assert!(shown.len() < ECHO_MAX + 40, "{} bytes", shown.len());
        assert!(shown.ends_with(&format!("… ({} bytes)", 1 << 20)), "{shown}");
        assert!(!shown.contains('\n'));
    }

    #[test]
    fn cutting_respects_character_boundaries() {
        let long = "é".repeat(200); // 2 bytes each: 128 is a boundary, 129 not
        let shown = echo(&format!("a{long}")).to_string();
        assert!(shown.contains("(401 bytes)"), "{shown}");
    }

    #[test]
    fn newlines_never_survive_even_when_cut() {
        let evil = format!("{}\nINFO forged line", "y".repeat(127));
        let shown = echo(&evil).to_string();
        assert!(!shown.contains('\n'), "{shown}");
    }

    #[test]
    fn whole_messages_are_capped() {
        assert_eq!(cap_message("short".into(), 100), "short");
        let capped = cap_message("z".repeat(5000), 1024);
        assert!(capped.len() <= 1024, "{}", capped.len());
        assert!(capped.ends_with("(message cut, 5000 bytes)"));
        let capped = cap_message("ü".repeat(3000), 1001);
        assert!(capped.len() <= 1001);
    }
}
