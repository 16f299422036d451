//! `sluice test --expect`: a handler's results compared with the ones its
//! author wrote down, message by message and field by field. This is the
//! handler author's unit test, runnable in their own CI with nothing but
//! the `sluice` binary.
//!
//! Expected lines use the result format of `sluice test` itself (see
//! `jsonl`), so `--update` can write them and a reader can diff them.
//! Fields are compared as JSON: `value` (text) and `value_base64` (bytes
//! that are not UTF-8) are different fields, so a value that stops being
//! text shows up as one field gone and another come.

use std::fmt::Write as _;

use serde_json::Value;

/// How much of a differing value a report shows before eliding the rest.
const SHOWN_CHARS: usize = 120;

/// One message whose result is not the expected one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mismatch {
    /// 1-based, in input order.
    pub(crate) message: usize,
    /// `topic/partition@offset` of the message, when known.
    pub(crate) coordinates: Option<String>,
    pub(crate) fields: Vec<FieldDifference>,
}

/// A field that differs: its path (`outputs[0].value`), and what each side
/// has there (`None`: the field is absent on that side).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldDifference {
    pub(crate) path: String,
    pub(crate) expected: Option<Value>,
    pub(crate) actual: Option<Value>,
}

/// Every message whose result differs from its expected line, in order. A
/// result without an expected line, or an expected line without a result,
/// is a mismatch of the whole line (path empty).
pub(crate) fn compare(expected: &[Value], actual: &[Value]) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    for index in 0..expected.len().max(actual.len()) {
        let (wanted, got) = (expected.get(index), actual.get(index));
        let mut fields = Vec::new();
        match (wanted, got) {
            (Some(wanted), Some(got)) => diff(String::new(), wanted, got, &mut fields),
            _ => fields.push(FieldDifference {
                path: String::new(),
                expected: wanted.cloned(),
                actual: got.cloned(),
            }),
        }
        if !fields.is_empty() {
            mismatches.push(Mismatch {
                message: index + 1,
                coordinates: got.or(wanted).and_then(coordinates),
                fields,
            });
        }
    }
    mismatches
}

fn diff(path: String, expected: &Value, actual: &Value, out: &mut Vec<FieldDifference>) {
    match (expected, actual) {
        (Value::Object(wanted), Value::Object(got)) => {
            for (key, wanted_value) in wanted {
                let field = join(&path, key);
                match got.get(key) {
                    Some(got_value) => diff(field, wanted_value, got_value, out),
                    None => out.push(FieldDifference {
                        path: field,
                        expected: Some(wanted_value.clone()),
                        actual: None,
                    }),
                }
            }
            for (key, got_value) in got.iter().filter(|(key, _)| !wanted.contains_key(*key)) {
                out.push(FieldDifference {
                    path: join(&path, key),
                    expected: None,
                    actual: Some(got_value.clone()),
                });
            }
        }
        (Value::Array(wanted), Value::Array(got)) => {
            for index in 0..wanted.len().max(got.len()) {
                let element = format!("{path}[{index}]");
                match (wanted.get(index), got.get(index)) {
                    (Some(wanted), Some(got)) => diff(element, wanted, got, out),
                    (wanted, got) => out.push(FieldDifference {
                        path: element,
                        expected: wanted.cloned(),
                        actual: got.cloned(),
                    }),
                }
            }
        }
        _ if expected == actual => {}
        _ => out.push(FieldDifference {
            path,
            expected: Some(expected.clone()),
            actual: Some(actual.clone()),
        }),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn coordinates(line: &Value) -> Option<String> {
    Some(format!(
        "{}/{}@{}",
        line.get("topic")?.as_str()?,
        line.get("partition")?,
        line.get("offset")?
    ))
}

/// The report a person reads: one block per mismatching message, one line
/// per field.
pub(crate) fn report(mismatches: &[Mismatch]) -> String {
    let mut text = String::new();
    for mismatch in mismatches {
        let at = mismatch
            .coordinates
            .as_ref()
            .map(|coordinates| format!(" ({coordinates})"))
            .unwrap_or_default();
        let _ = writeln!(text, "message {}{at} differs:", mismatch.message);
        for field in &mismatch.fields {
            let name = if field.path.is_empty() { "result" } else { &field.path };
            let _ = writeln!(
                text,
                "  {name}: expected {}, got {}",
                shown(field.expected.as_ref()),
                shown(field.actual.as_ref())
            );
        }
    }
    text
}

/// A value as JSON, elided past [`SHOWN_CHARS`]; an absent one as
/// "nothing".
fn shown(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "nothing".to_owned();
    };
    let text = value.to_string();
    let chars = text.chars().count();
    if chars <= SHOWN_CHARS {
        return text;
    }
    let head: String = text.chars().take(SHOWN_CHARS).collect();
    format!("{head}… ({chars} characters)")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn success(offset: i64, value: &str) -> Value {
        json!({"topic": "events", "partition": 0, "offset": offset, "verdict": "success",
               "outputs": [{"topic": null, "key": "k", "value": value, "headers": []}]})
    }

    #[test]
    fn equal_results_have_no_mismatch() {
        let lines = vec![success(1, "A"), success(2, "B")];
        assert!(compare(&lines, &lines).is_empty());
    }

    #[test]
    fn a_differing_field_is_named_by_its_path() {
        let mismatches = compare(&[success(1, "A"), success(2, "B")], &[success(1, "A"), success(2, "b")]);
        assert_eq!(
            mismatches,
            vec![Mismatch {
                message: 2,
                coordinates: Some("events/0@2".to_owned()),
                fields: vec![FieldDifference {
                    path: "outputs[0].value".to_owned(),
                    expected: Some(json!("B")),
                    actual: Some(json!("b")),
                }],
            }]
        );
        assert_eq!(
            report(&mismatches),
            "message 2 (events/0@2) differs:\n  outputs[0].value: expected \"B\", got \"b\"\n"
        );
    }

    #[test]
    fn text_turned_bytes_is_one_field_gone_and_one_come() {
        let mut bytes = success(1, "A");
        let output = &mut bytes["outputs"][0];
        output.as_object_mut().unwrap().remove("value");
        output["value_base64"] = json!("/w==");
        let fields = &compare(&[success(1, "A")], &[bytes])[0].fields;
        let paths: Vec<(&str, bool, bool)> = fields
            .iter()
            .map(|field| (field.path.as_str(), field.expected.is_some(), field.actual.is_some()))
            .collect();
        assert_eq!(
            paths,
            [
                ("outputs[0].value", true, false),
                ("outputs[0].value_base64", false, true)
            ]
        );
    }

    #[test]
    fn a_verdict_that_changed_shows_the_verdict_and_its_fields() {
        let dead = json!({"topic": "events", "partition": 0, "offset": 1, "verdict": "dead-letter", "reason": "bad"});
        let report = report(&compare(&[success(1, "A")], &[dead]));
        assert!(
            report.contains("verdict: expected \"success\", got \"dead-letter\""),
            "{report}"
        );
        assert!(report.contains("outputs: expected ["), "{report}");
        assert!(report.contains("reason: expected nothing, got \"bad\""), "{report}");
    }

    #[test]
    fn missing_and_extra_lines_are_whole_line_mismatches() {
        let report_missing = report(&compare(&[success(1, "A")], &[success(1, "A"), success(2, "B")]));
        assert!(
            report_missing.starts_with("message 2 (events/0@2) differs:\n  result: expected nothing, got {"),
            "{report_missing}"
        );
        let report_extra = report(&compare(&[success(1, "A"), success(2, "B")], &[success(1, "A")]));
        assert!(
            report_extra.contains("  result: expected {") && report_extra.ends_with(", got nothing\n"),
            "{report_extra}"
        );
    }

    #[test]
    fn an_extra_output_is_named_by_its_index() {
        let mut two = success(1, "A");
        let first = two["outputs"][0].clone();
        two["outputs"].as_array_mut().unwrap().push(first);
        let fields = &compare(&[success(1, "A")], &[two])[0].fields;
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].path, "outputs[1]");
        assert_eq!(fields[0].expected, None);
    }

    #[test]
    fn long_values_are_elided_with_their_length() {
        let long = "x".repeat(500);
        let report = report(&compare(&[success(1, "A")], &[success(1, &long)]));
        assert!(report.contains("… (502 characters)"), "{report}");
        assert!(report.lines().all(|line| line.chars().count() < 300), "{report}");
    }
}
