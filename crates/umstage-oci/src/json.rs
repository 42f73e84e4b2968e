//! Canonical JSON: object keys sorted, no insignificant whitespace, so digests are reproducible
//! whatever map types the structures use.

use serde::Serialize;
use serde_json::Value;

/// Serialises `value` as canonical JSON.
pub fn to_canonical_vec<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::new();
    write_value(&mut out, &value)?;
    Ok(out)
}

fn write_value(out: &mut Vec<u8>, value: &Value) -> serde_json::Result<()> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                write_value(out, value)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_sorted_at_every_level() {
        let mut map = std::collections::HashMap::new();
        map.insert("b", serde_json::json!({"z": 1, "a": [{"y": 2, "x": 3}]}));
        map.insert("a", serde_json::json!(null));
        let text = String::from_utf8(to_canonical_vec(&map).unwrap()).unwrap();
        assert_eq!(text, r#"{"a":null,"b":{"a":[{"x":3,"y":2}],"z":1}}"#);
    }
}
