//! The exec (JSON) form: a JSON array of strings, with Go's `encoding/json` acceptance rules.

/// How an argument string reads as the JSON form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonArgs {
    /// Not valid JSON (or not an array): the instruction falls back to its shell form.
    NotJson,
    /// Valid JSON array with an element that is not a string: a parse error.
    NotStringArray,
    /// A JSON array of strings.
    Strings(Vec<String>),
}

/// Go's decoder gives up at this nesting depth; deeper input is not JSON to it.
const MAX_DEPTH: usize = 10_000;

struct Reader<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

/// Parses `text` (already left-trimmed) as a JSON array of strings.
pub(crate) fn parse_json_args(text: &str) -> JsonArgs {
    if !text.starts_with('[') {
        return JsonArgs::NotJson;
    }
    let mut r = Reader {
        b: text.as_bytes(),
        s: text,
        i: 1,
    };
    let mut out = Vec::new();
    let mut all_strings = true;
    r.ws();
    if r.peek() == Some(b']') {
        r.i += 1;
    } else {
        loop {
            r.ws();
            if r.peek() == Some(b'"') {
                match r.string() {
                    Some(s) => out.push(s),
                    None => return JsonArgs::NotJson,
                }
            } else {
                if !r.value() {
                    return JsonArgs::NotJson;
                }
                all_strings = false;
            }
            r.ws();
            match r.peek() {
                Some(b',') => r.i += 1,
                Some(b']') => {
                    r.i += 1;
                    break;
                }
                _ => return JsonArgs::NotJson,
            }
        }
    }
    r.ws();
    if r.i != r.b.len() {
        return JsonArgs::NotJson;
    }
    if all_strings {
        JsonArgs::Strings(out)
    } else {
        JsonArgs::NotStringArray
    }
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn lit(&mut self, word: &[u8]) -> bool {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return false,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return false;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return false;
            }
        }
        true
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    /// Reads a string starting at its opening quote.
    fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(self.s.get(start..self.i)?);
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                let save = self.i;
                                let pair = if self.lit(b"\\u") {
                                    self.hex4().filter(|lo| (0xDC00..0xE000).contains(lo))
                                } else {
                                    None
                                };
                                match pair {
                                    Some(lo) => char::from_u32(
                                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00),
                                    ),
                                    None => {
                                        self.i = save;
                                        None
                                    }
                                }
                            } else {
                                char::from_u32(hi)
                            };
                            out.push(c.unwrap_or('\u{FFFD}'));
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// Skips one JSON value of any type; false if it is malformed.
    fn value(&mut self) -> bool {
        // An explicit stack of open containers: b'[' or b'{'.
        let mut stack: Vec<u8> = Vec::new();
        loop {
            self.ws();
            // Read one scalar or open a container.
            match self.peek() {
                Some(b'"') => {
                    if self.string().is_none() {
                        return false;
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    stack.push(b'[');
                    if stack.len() > MAX_DEPTH {
                        return false;
                    }
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        stack.pop();
                    } else {
                        continue;
                    }
                }
                Some(b'{') => {
                    self.i += 1;
                    stack.push(b'{');
                    if stack.len() > MAX_DEPTH {
                        return false;
                    }
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        stack.pop();
                    } else if !self.key() {
                        return false;
                    } else {
                        continue;
                    }
                }
                Some(b't') => {
                    if !self.lit(b"true") {
                        return false;
                    }
                }
                Some(b'f') => {
                    if !self.lit(b"false") {
                        return false;
                    }
                }
                Some(b'n') => {
                    if !self.lit(b"null") {
                        return false;
                    }
                }
                _ => {
                    if !self.number() {
                        return false;
                    }
                }
            }
            // After a complete value: close containers or move to the next element.
            loop {
                let Some(&top) = stack.last() else {
                    return true;
                };
                self.ws();
                match (top, self.peek()) {
                    (_, Some(b',')) => {
                        self.i += 1;
                        if top == b'{' && !self.key() {
                            return false;
                        }
                        break;
                    }
                    (b'[', Some(b']')) | (b'{', Some(b'}')) => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return false,
                }
            }
        }
    }

    /// Reads `"key" :` inside an object.
    fn key(&mut self) -> bool {
        self.ws();
        if self.peek() != Some(b'"') || self.string().is_none() {
            return false;
        }
        self.ws();
        if self.peek() != Some(b':') {
            return false;
        }
        self.i += 1;
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn arrays_of_strings() {
        assert_eq!(
            parse_json_args(r#"[ "a", "b\u0000\/" ] "#),
            JsonArgs::Strings(vec!["a".into(), "b\0/".into()])
        );
        assert_eq!(parse_json_args("[]"), JsonArgs::Strings(vec![]));
    }

    #[test]
    fn non_strings_and_invalid_json() {
        assert_eq!(
            parse_json_args(r#"[ "echo", [ "nested json" ] ]"#),
            JsonArgs::NotStringArray
        );
        assert_eq!(
            parse_json_args(r#"[1, {"a": [true, null]}]"#),
            JsonArgs::NotStringArray
        );
        assert_eq!(parse_json_args("['a']"), JsonArgs::NotJson);
        assert_eq!(parse_json_args(r#"["a""#), JsonArgs::NotJson);
        assert_eq!(parse_json_args(r#"["a"] x"#), JsonArgs::NotJson);
        assert_eq!(parse_json_args(r#"[01]"#), JsonArgs::NotJson);
        assert_eq!(parse_json_args(&"[".repeat(20_000)), JsonArgs::NotJson);
    }
}
