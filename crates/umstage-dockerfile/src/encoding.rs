//! A Dockerfile's bytes as text: UTF-8 or a located error.

use crate::error::{Error, ErrorKind};
use crate::span::Span;

/// `bytes` as UTF-8 text, or an error naming the line and column of the first invalid byte.
pub fn decode<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, Error> {
    let e = match std::str::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(e) => e,
    };
    let at = e.valid_up_to();
    let before = String::from_utf8_lossy(&bytes[..at]);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let message = match e.error_len() {
        Some(_) => format!(
            "not UTF-8: byte 0x{:02x} is not a valid character here; save the file as UTF-8",
            bytes[at]
        ),
        None => "not UTF-8: the file ends inside a character; save the file as UTF-8".to_owned(),
    };
    // The line is shown with the invalid bytes as U+FFFD, so the caret lands on the first one.
    let shown = String::from_utf8_lossy(bytes);
    Err(Error::new(
        ErrorKind::Syntax,
        file,
        Span::on_line(line, col, 1),
        message,
    )
    .with_source(&shown))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::span::Pos;

    #[test]
    fn utf8_passes_through() {
        assert_eq!(
            decode("Dockerfile", "FROM é\n".as_bytes()).unwrap(),
            "FROM é\n"
        );
    }

    #[test]
    fn first_invalid_byte_is_located_in_characters() {
        let e = decode(
            "Dockerfile",
            b"FROM scratch\nLABEL \xc3\xa9=\xff\xfe\nRUN \xff\n",
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Syntax);
        assert_eq!(e.span.start, Pos::new(2, 9));
        assert_eq!(
            e.to_string(),
            "Dockerfile:2:9: not UTF-8: byte 0xff is not a valid character here; save the file as UTF-8\n\
             2 | LABEL é=\u{fffd}\u{fffd}\n  |         ^"
        );
    }

    #[test]
    fn truncated_character_at_the_end_is_located() {
        let e = decode("Dockerfile", b"FROM scratch\n\xe2\x82").unwrap_err();
        assert_eq!(e.span.start, Pos::new(2, 1));
        assert!(
            e.message.contains("ends inside a character"),
            "{}",
            e.message
        );
    }
}
