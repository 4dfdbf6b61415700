//! A small validator for the OpenAPI 3.0 schema objects of the loaded description.
//!
//! It walks the schema as loaded (never a retyped copy) and supports exactly the keywords
//! listed in [`VALIDATION_KEYWORDS`] plus the annotations in [`ANNOTATIONS`]. A schema using
//! any other keyword, or an unresolved `$ref`, is refused when the description is loaded
//! ([`check_supported`]): a rule the fake cannot enforce must not be ignored silently.
//!
//! OpenAPI 3.0 specifics: `nullable: true` admits `null`; `readOnly` properties must not be
//! sent in a request (and their `required` applies to responses only); `writeOnly` ones must
//! not appear in a response (and their `required` applies to requests only); `exclusiveMinimum`
//! and `exclusiveMaximum` are booleans; numeric keywords apply only to numbers and string
//! keywords only to strings, as in JSON Schema (the description puts `minimum: 1` on
//! string path parameters, which therefore constrains nothing).

use std::fmt;

use serde_json::{Map, Value};

/// Keywords the validator enforces.
pub const VALIDATION_KEYWORDS: &[&str] = &[
    "type",
    "nullable",
    "enum",
    "format",
    "required",
    "properties",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "readOnly",
    "writeOnly",
];

/// Keywords that carry no rule.
pub const ANNOTATIONS: &[&str] = &[
    "description",
    "example",
    "examples",
    "default",
    "title",
    "deprecated",
    "externalDocs",
    "xml",
];

/// String formats the validator checks; integer and number formats are range checks.
pub const FORMATS: &[&str] = &[
    "uuid",
    "date-time",
    "uri",
    "cidr",
    "int32",
    "int64",
    "float",
    "double",
];

/// Which way a value travels: it decides what `readOnly` and `writeOnly` mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to API.
    Request,
    /// API to client.
    Response,
}

/// One way a value breaks its schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer of the offending value (`""` for the whole value).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

/// Joins violations into one line for an error message.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks that `schema` (at `location`, for messages) uses only supported keywords and
/// formats, recursively.
pub fn check_supported(schema: &Value, location: &str) -> Result<(), String> {
    let Value::Object(map) = schema else {
        return match schema {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("{location}: a schema must be an object")),
        };
    };
    for (key, value) in map {
        if key.starts_with("x-") || ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        if key == "$ref" {
            return Err(format!(
                "{location}: unresolved $ref {value}; the description must have every $ref resolved inline"
            ));
        }
        if !VALIDATION_KEYWORDS.contains(&key.as_str()) {
            return Err(format!(
                "{location}: schema keyword {key:?} is not supported by the fake's validator \
                 (supported: {})",
                VALIDATION_KEYWORDS.join(", ")
            ));
        }
        match key.as_str() {
            "properties" => {
                let Value::Object(props) = value else {
                    return Err(format!("{location}/properties: must be an object"));
                };
                for (name, sub) in props {
                    check_supported(sub, &format!("{location}/properties/{name}"))?;
                }
            }
            "items" | "not" => check_supported(value, &format!("{location}/{key}"))?,
            "additionalProperties" if !value.is_boolean() => {
                check_supported(value, &format!("{location}/additionalProperties"))?;
            }
            "allOf" | "anyOf" | "oneOf" => {
                let Value::Array(subs) = value else {
                    return Err(format!("{location}/{key}: must be an array"));
                };
                for (i, sub) in subs.iter().enumerate() {
                    check_supported(sub, &format!("{location}/{key}/{i}"))?;
                }
            }
            "format" => {
                let f = value.as_str().unwrap_or_default();
                if !FORMATS.contains(&f) {
                    return Err(format!(
                        "{location}: format {value} is not supported by the fake's validator \
                         (supported: {})",
                        FORMATS.join(", ")
                    ));
                }
            }
            "type" => {
                let t = value.as_str().unwrap_or_default();
                if !["string", "integer", "number", "boolean", "array", "object"].contains(&t) {
                    return Err(format!("{location}: unknown type {value}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Validates `value` against `schema`, collecting every violation.
pub fn validate(schema: &Value, value: &Value, direction: Direction) -> Vec<Violation> {
    let mut out = Vec::new();
    check(schema, value, direction, "", &mut out);
    out
}

fn push(out: &mut Vec<Violation>, pointer: &str, message: String) {
    out.push(Violation {
        pointer: pointer.to_owned(),
        message,
    });
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Short form of a value for messages.
fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn flag(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn check(schema: &Value, value: &Value, dir: Direction, pointer: &str, out: &mut Vec<Violation>) {
    let map = match schema {
        Value::Object(map) => map,
        Value::Bool(true) => return,
        Value::Bool(false) => {
            push(out, pointer, "no value is allowed here".into());
            return;
        }
        _ => return,
    };

    if value.is_null() {
        let allowed = flag(map, "nullable") || !map.contains_key("type");
        if !allowed {
            push(
                out,
                pointer,
                format!(
                    "null is not allowed (expected {})",
                    map.get("type").and_then(Value::as_str).unwrap_or("a value")
                ),
            );
        }
        return;
    }

    if let Some(ty) = map.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "integer" => matches!(value, Value::Number(n) if n.is_i64() || n.is_u64()),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        };
        if !ok {
            push(
                out,
                pointer,
                format!("expected {ty}, got {} {}", kind_of(value), show(value)),
            );
            return;
        }
    }

    if let Some(Value::Array(options)) = map.get("enum") {
        if !options.contains(value) {
            let allowed: Vec<String> = options.iter().map(show).collect();
            push(
                out,
                pointer,
                format!("{} is not one of {}", show(value), allowed.join(", ")),
            );
        }
    }

    match value {
        Value::String(s) => check_string(map, s, pointer, out),
        Value::Number(n) => check_number(map, n, pointer, out),
        Value::Array(items) => check_array(map, items, dir, pointer, out),
        Value::Object(obj) => check_object(map, obj, dir, pointer, out),
        _ => {}
    }

    if let Some(Value::Array(subs)) = map.get("allOf") {
        for sub in subs {
            check(sub, value, dir, pointer, out);
        }
    }
    if let Some(Value::Array(subs)) = map.get("anyOf") {
        let results: Vec<Vec<Violation>> = subs
            .iter()
            .map(|sub| {
                let mut v = Vec::new();
                check(sub, value, dir, pointer, &mut v);
                v
            })
            .collect();
        if !results.iter().any(Vec::is_empty) {
            let why: Vec<String> = results.iter().map(|v| describe(v)).collect();
            push(
                out,
                pointer,
                format!("matches none of anyOf ({})", why.join(" | ")),
            );
        }
    }
    if let Some(Value::Array(subs)) = map.get("oneOf") {
        let matching = subs
            .iter()
            .filter(|sub| {
                let mut v = Vec::new();
                check(sub, value, dir, pointer, &mut v);
                v.is_empty()
            })
            .count();
        if matching != 1 {
            push(
                out,
                pointer,
                format!("matches {matching} of oneOf's schemas, not exactly one"),
            );
        }
    }
    if let Some(sub) = map.get("not") {
        let mut v = Vec::new();
        check(sub, value, dir, pointer, &mut v);
        if v.is_empty() {
            push(out, pointer, "matches a schema it must not (not)".into());
        }
    }
}

fn check_string(map: &Map<String, Value>, s: &str, pointer: &str, out: &mut Vec<Violation>) {
    let len = s.chars().count() as u64;
    if let Some(min) = map.get("minLength").and_then(Value::as_u64) {
        if len < min {
            push(
                out,
                pointer,
                format!("{s:?} is shorter than {min} characters"),
            );
        }
    }
    if let Some(max) = map.get("maxLength").and_then(Value::as_u64) {
        if len > max {
            push(
                out,
                pointer,
                format!("{s:?} is longer than {max} characters"),
            );
        }
    }
    if let Some(format) = map.get("format").and_then(Value::as_str) {
        let ok = match format {
            "uuid" => is_uuid(s),
            "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
            "uri" => url::Url::parse(s).is_ok(),
            "cidr" => is_cidr(s),
            _ => true,
        };
        if !ok {
            push(out, pointer, format!("{s:?} is not a valid {format}"));
        }
    }
}

fn check_number(
    map: &Map<String, Value>,
    n: &serde_json::Number,
    pointer: &str,
    out: &mut Vec<Violation>,
) {
    let Some(x) = n.as_f64() else { return };
    if let Some(min) = map.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(map, "exclusiveMinimum");
        if x < min || (exclusive && x == min) {
            let op = if exclusive { ">" } else { ">=" };
            push(out, pointer, format!("{n} is not {op} {min}"));
        }
    }
    if let Some(max) = map.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(map, "exclusiveMaximum");
        if x > max || (exclusive && x == max) {
            let op = if exclusive { "<" } else { "<=" };
            push(out, pointer, format!("{n} is not {op} {max}"));
        }
    }
    if let Some(step) = map.get("multipleOf").and_then(Value::as_f64) {
        if step > 0.0 && (x / step).fract().abs() > 1e-9 {
            push(out, pointer, format!("{n} is not a multiple of {step}"));
        }
    }
    match map.get("format").and_then(Value::as_str) {
        Some("int32") if n.as_i64().is_none_or(|i| i32::try_from(i).is_err()) => {
            push(out, pointer, format!("{n} is out of the int32 range"));
        }
        Some("int64") if n.as_i64().is_none() => {
            push(out, pointer, format!("{n} is out of the int64 range"));
        }
        _ => {}
    }
}

fn check_array(
    map: &Map<String, Value>,
    items: &[Value],
    dir: Direction,
    pointer: &str,
    out: &mut Vec<Violation>,
) {
    let len = items.len() as u64;
    if let Some(min) = map.get("minItems").and_then(Value::as_u64) {
        if len < min {
            push(out, pointer, format!("has {len} items, fewer than {min}"));
        }
    }
    if let Some(max) = map.get("maxItems").and_then(Value::as_u64) {
        if len > max {
            push(out, pointer, format!("has {len} items, more than {max}"));
        }
    }
    if flag(map, "uniqueItems") {
        for (i, a) in items.iter().enumerate() {
            if items[..i].contains(a) {
                push(out, pointer, format!("item {i} repeats an earlier item"));
            }
        }
    }
    if let Some(item_schema) = map.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, dir, &format!("{pointer}/{i}"), out);
        }
    }
}

/// The schema of property `name` as `schema` or its allOf/anyOf/oneOf members declare it.
fn property_schema<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(p) = schema.get("properties").and_then(|p| p.get(name)) {
        return Some(p);
    }
    ["allOf", "anyOf", "oneOf"].iter().find_map(|k| {
        schema
            .get(*k)
            .and_then(Value::as_array)
            .and_then(|subs| subs.iter().find_map(|s| property_schema(s, name)))
    })
}

fn is_read_only(schema: Option<&Value>) -> bool {
    schema
        .and_then(|s| s.get("readOnly"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn is_write_only(schema: Option<&Value>) -> bool {
    schema
        .and_then(|s| s.get("writeOnly"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn check_object(
    map: &Map<String, Value>,
    obj: &Map<String, Value>,
    dir: Direction,
    pointer: &str,
    out: &mut Vec<Violation>,
) {
    let whole = Value::Object(map.clone());
    if let Some(Value::Array(required)) = map.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if obj.contains_key(name) {
                continue;
            }
            let prop = property_schema(&whole, name);
            let skip = match dir {
                Direction::Request => is_read_only(prop),
                Direction::Response => is_write_only(prop),
            };
            if !skip {
                push(
                    out,
                    pointer,
                    format!("required property {name:?} is missing"),
                );
            }
        }
    }
    let count = obj.len() as u64;
    if let Some(min) = map.get("minProperties").and_then(Value::as_u64) {
        if count < min {
            push(
                out,
                pointer,
                format!("has {count} properties, fewer than {min}"),
            );
        }
    }
    if let Some(max) = map.get("maxProperties").and_then(Value::as_u64) {
        if count > max {
            push(
                out,
                pointer,
                format!("has {count} properties, more than {max}"),
            );
        }
    }
    let props = map.get("properties").and_then(Value::as_object);
    for (name, value) in obj {
        let child = format!("{pointer}/{}", escape_pointer(name));
        match props.and_then(|p| p.get(name)) {
            Some(prop) => {
                if dir == Direction::Request && is_read_only(Some(prop)) {
                    push(
                        out,
                        &child,
                        "is read-only: it must not be sent in a request".into(),
                    );
                    continue;
                }
                if dir == Direction::Response && is_write_only(Some(prop)) {
                    push(
                        out,
                        &child,
                        "is write-only: it must not appear in a response".into(),
                    );
                    continue;
                }
                check(prop, value, dir, &child, out);
            }
            None => match map.get("additionalProperties") {
                Some(Value::Bool(false)) => push(
                    out,
                    &child,
                    "is not a known property and additionalProperties is false".into(),
                ),
                Some(extra @ Value::Object(_)) => check(extra, value, dir, &child, out),
                _ => {}
            },
        }
    }
}

/// `8-4-4-4-12` hexadecimal digits.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body_schema() -> Value {
        json!({
            "type": "object",
            "required": ["name", "count"],
            "allOf": [{
                "type": "object",
                "properties": {
                    "id": {"type": "string", "format": "uuid", "readOnly": true},
                    "name": {"type": "string"},
                    "count": {"type": "integer"},
                    "labels": {"type": "object", "nullable": true},
                    "taints": {"type": "array", "items": {"type": "object", "properties": {
                        "effect": {"type": "string", "enum": ["NoSchedule", "NoExecute"]}
                    }}}
                }
            }]
        })
    }

    #[test]
    fn required_properties_declared_beside_all_of_are_enforced() {
        let v = validate(&body_schema(), &json!({"name": "p"}), Direction::Request);
        assert_eq!(describe(&v), "required property \"count\" is missing");
    }

    #[test]
    fn wrong_types_enums_and_read_only_fields_are_violations_with_a_pointer() {
        let v = validate(
            &body_schema(),
            &json!({"id": "x", "name": "p", "count": "3", "taints": [{"effect": "Nope"}]}),
            Direction::Request,
        );
        let text = describe(&v);
        assert!(text.contains("/id: is read-only"), "{text}");
        assert!(
            text.contains("/count: expected integer, got string \"3\""),
            "{text}"
        );
        assert!(
            text.contains("/taints/0/effect: \"Nope\" is not one of"),
            "{text}"
        );
    }

    #[test]
    fn nullable_admits_null_and_a_float_is_no_integer() {
        let ok = validate(
            &body_schema(),
            &json!({"name": "p", "count": 1, "labels": null}),
            Direction::Request,
        );
        assert!(ok.is_empty(), "{ok:?}");
        let v = validate(
            &body_schema(),
            &json!({"name": "p", "count": 1.5}),
            Direction::Request,
        );
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn read_only_required_properties_are_required_in_responses_only() {
        let schema = json!({"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string", "readOnly": true}}});
        assert!(validate(&schema, &json!({}), Direction::Request).is_empty());
        assert_eq!(validate(&schema, &json!({}), Direction::Response).len(), 1);
    }

    #[test]
    fn any_of_one_of_not_and_numeric_bounds_hold() {
        let schema = json!({"anyOf": [{"type": "integer", "minimum": 1, "maximum": 200}, {"type": "string"}]});
        assert!(validate(&schema, &json!(5), Direction::Request).is_empty());
        assert!(validate(&schema, &json!("x"), Direction::Request).is_empty());
        assert_eq!(validate(&schema, &json!(0), Direction::Request).len(), 1);
        let one = json!({"oneOf": [{"type": "integer"}, {"type": "number"}]});
        assert_eq!(validate(&one, &json!(1), Direction::Request).len(), 1);
        let not = json!({"not": {"type": "string"}});
        assert_eq!(validate(&not, &json!("s"), Direction::Request).len(), 1);
    }

    #[test]
    fn formats_are_checked() {
        let s = |f: &str| json!({"type": "string", "format": f});
        assert!(validate(
            &s("uuid"),
            &json!("bd5f5959-5e1e-4205-a714-a914373942af"),
            Direction::Request
        )
        .is_empty());
        assert_eq!(
            validate(&s("uuid"), &json!("42"), Direction::Request).len(),
            1
        );
        assert!(validate(
            &s("date-time"),
            &json!("2018-11-15T16:00:11Z"),
            Direction::Response
        )
        .is_empty());
        assert_eq!(
            validate(&s("date-time"), &json!("yesterday"), Direction::Response).len(),
            1
        );
        assert!(validate(&s("cidr"), &json!("10.0.0.0/8"), Direction::Response).is_empty());
        assert_eq!(
            validate(&s("cidr"), &json!("10.0.0.0/33"), Direction::Response).len(),
            1
        );
    }

    #[test]
    fn unsupported_keywords_and_refs_are_refused_at_load() {
        assert!(check_supported(&body_schema(), "#").is_ok());
        let err = check_supported(&json!({"type": "string", "pattern": "^a$"}), "#/x")
            .expect_err("pattern is not supported");
        assert!(err.contains("\"pattern\""), "{err}");
        let err = check_supported(&json!({"$ref": "#/components/schemas/x"}), "#/y")
            .expect_err("refs must be resolved");
        assert!(err.contains("unresolved $ref"), "{err}");
        let err = check_supported(&json!({"type": "string", "format": "email"}), "#/z")
            .expect_err("unknown format");
        assert!(err.contains("email"), "{err}");
    }
}
