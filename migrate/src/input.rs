//! Reading manifests: files or standard input, multi-document YAML, JSON (one value or several in
//! a row, as `kubectl get -o json` output concatenated), and `kind: List` wrappers.

use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;

/// One Kubernetes object from the input, with where it came from for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub origin: String,
    pub value: Value,
}

/// Where manifests are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    /// `-` is standard input, as for kubectl.
    pub fn from_arg(arg: &str) -> Self {
        if arg == "-" {
            Source::Stdin
        } else {
            Source::File(PathBuf::from(arg))
        }
    }

    fn name(&self) -> String {
        match self {
            Source::Stdin => "<stdin>".to_owned(),
            Source::File(path) => path.display().to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{origin}: cannot read: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    #[error("{origin}: not valid YAML or JSON: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: not a Kubernetes object (a mapping with apiVersion and kind)")]
    NotAnObject { origin: String },
}

/// Reads every source in order; standard input is read at most once, however often it is named.
pub fn read_sources(sources: &[Source], mut stdin: impl Read) -> Result<Vec<Document>, InputError> {
    let mut documents = Vec::new();
    let mut stdin_read = false;
    for source in sources {
        let origin = source.name();
        let text = match source {
            Source::Stdin if stdin_read => continue,
            Source::Stdin => {
                stdin_read = true;
                let mut text = String::new();
                stdin
                    .read_to_string(&mut text)
                    .map_err(|source| InputError::Read {
                        origin: origin.clone(),
                        source,
                    })?;
                text
            }
            Source::File(path) => {
                std::fs::read_to_string(path).map_err(|source| InputError::Read {
                    origin: origin.clone(),
                    source,
                })?
            }
        };
        documents.extend(parse_text(&origin, &text)?);
    }
    Ok(documents)
}

/// Splits one text into objects.
pub fn parse_text(origin: &str, text: &str) -> Result<Vec<Document>, InputError> {
    let values = parse_values(origin, text)?;
    let several = values.len() > 1;
    let mut documents = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        let origin = if several {
            format!("{origin}, document {}", index + 1)
        } else {
            origin.to_owned()
        };
        flatten(origin, value, &mut documents)?;
    }
    Ok(documents)
}

fn parse_values(origin: &str, text: &str) -> Result<Vec<Value>, InputError> {
    let looks_like_json = matches!(text.trim_start().chars().next(), Some('{' | '['));
    let json_error = if looks_like_json {
        match serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(values) => return Ok(values),
            // YAML flow style also starts with a brace; let the YAML parser have a go.
            Err(error) => Some(error.to_string()),
        }
    } else {
        None
    };
    match serde_saphyr::from_multiple::<Value>(text) {
        Ok(values) => Ok(values.into_iter().filter(|v| !v.is_null()).collect()),
        Err(error) => Err(InputError::Syntax {
            origin: origin.to_owned(),
            message: json_error.unwrap_or_else(|| error.to_string()),
        }),
    }
}

/// Unwraps `kind: List` (and `IPAddressPoolList` and the like) and bare arrays into their items.
fn flatten(origin: String, value: Value, out: &mut Vec<Document>) -> Result<(), InputError> {
    let items = match value {
        Value::Null => return Ok(()),
        Value::Array(items) => items,
        Value::Object(ref object)
            if object
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.ends_with("List"))
                && object.get("items").is_some_and(Value::is_array) =>
        {
            match value {
                Value::Object(mut object) => match object.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            }
        }
        Value::Object(_) => {
            out.push(Document { origin, value });
            return Ok(());
        }
        _ => return Err(InputError::NotAnObject { origin }),
    };
    for (index, item) in items.into_iter().enumerate() {
        flatten(format!("{origin}, item {}", index + 1), item, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_yaml_skips_empty_documents() {
        let docs = parse_text("f.yaml", "---\na: 1\n---\n# nothing\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value, json!({"a": 1}));
        assert_eq!(docs[1].value, json!({"b": 2}));
    }

    #[test]
    fn lists_and_json_streams_are_unwrapped() {
        let text = r#"{"kind": "List", "items": [{"kind": "A"}, {"kind": "B"}]} {"kind": "C"}"#;
        let docs = parse_text("x.json", text).unwrap();
        let kinds: Vec<_> = docs.iter().map(|d| d.value["kind"].clone()).collect();
        assert_eq!(kinds, [json!("A"), json!("B"), json!("C")]);
        assert_eq!(docs[1].origin, "x.json, document 1, item 2");
    }

    #[test]
    fn yaml_flow_mappings_are_not_mistaken_for_json() {
        let docs = parse_text("f.yaml", "{kind: A, metadata: {name: x}}\n").unwrap();
        assert_eq!(docs[0].value["metadata"]["name"], "x");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            parse_text("f.yaml", "a: [1, 2\n"),
            Err(InputError::Syntax { .. })
        ));
        assert!(matches!(
            parse_text("f.yaml", "just a string\n"),
            Err(InputError::NotAnObject { .. })
        ));
        assert!(matches!(
            parse_text("f.json", "{\"a\": "),
            Err(InputError::Syntax { .. })
        ));
    }

    #[test]
    fn stdin_is_read_once() {
        let sources = [Source::Stdin, Source::from_arg("-")];
        let docs = read_sources(&sources, "kind: A\n".as_bytes()).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].origin, "<stdin>");
    }
}
