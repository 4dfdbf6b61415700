//! Kubernetes label selectors (`role=game-servers,tier in (a,b),!draining`): parsing with the
//! API server's syntax and validation rules, matching against a label map, and a canonical
//! string form to send to the API server.
//!
//! Validating locally matters: the API server rejects a bad selector only when the watch
//! starts, and an empty one silently selects every node of the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Longest label name (the part after an optional `prefix/`), and longest label value.
const MAX_NAME_LEN: usize = 63;
/// Longest DNS subdomain (the optional key prefix).
const MAX_PREFIX_LEN: usize = 253;

/// A label selector that failed to parse or validate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {message}")]
pub struct SelectorError {
    /// The selector text.
    pub selector: String,
    /// What is wrong with it.
    pub message: String,
}

/// A requirement's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value` or `key==value`: the label is present with this value.
    Equals,
    /// `key!=value`: the label is absent or has another value.
    NotEquals,
    /// `key in (a,b)`: the label is present with one of these values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of these values.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
}

/// One comma-separated term of a selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// Label key, validated (`[prefix/]name`).
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// Values, sorted (one for `=`/`!=`, at least one for `in`/`notin`, none otherwise).
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement (Kubernetes semantics: `!=` and `notin`
    /// match when the label is absent).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = || self.values.iter().next().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Exists => f.write_str(&self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={}", self.key, first()),
            Operator::NotEquals => write!(f, "{}!={}", self.key, first()),
            Operator::In | Operator::NotIn => {
                let op = if self.operator == Operator::In {
                    "in"
                } else {
                    "notin"
                };
                write!(f, "{} {op} (", self.key)?;
                for (i, v) in self.values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(v)?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A parsed, validated label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Its requirements, sorted by key (as the API server orders them).
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether it has no requirement, i.e. selects every object.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical form: requirements sorted by key, `=` for equality, sorted `in` values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |message: String| SelectorError {
            selector: s.to_string(),
            message,
        };
        let tokens = lex(s);
        let mut parser = Parser {
            tokens: &tokens,
            pos: 0,
        };
        let mut requirements = Vec::new();
        if parser.peek() == &Token::End {
            return Ok(LabelSelector::default());
        }
        loop {
            requirements.push(parser.requirement().map_err(err)?);
            match parser.next() {
                Token::End => break,
                Token::Comma => continue,
                other => {
                    return Err(err(format!(
                        "found {}, expected ',' or the end of the selector",
                        other.describe()
                    )))
                }
            }
        }
        // Stable: requirements on the same key keep their order, as in apimachinery.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    In,
    NotIn,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("{s:?}"),
            Token::Eq => "'='".into(),
            Token::DoubleEq => "'=='".into(),
            Token::NotEq => "'!='".into(),
            Token::Not => "'!'".into(),
            Token::Gt => "'>'".into(),
            Token::Lt => "'<'".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::Comma => "','".into(),
            Token::In => "'in'".into(),
            Token::NotIn => "'notin'".into(),
            Token::End => "the end of the selector".into(),
        }
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Splits like apimachinery's lexer: identifiers are runs of anything but whitespace and
/// `=!(),<>`; `in`/`notin` are keywords.
fn lex(s: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if is_space(c) {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let next_is_eq = chars.peek().is_some_and(|&(_, n)| n == '=');
            let tok = match c {
                '=' if next_is_eq => {
                    chars.next();
                    Token::DoubleEq
                }
                '!' if next_is_eq => {
                    chars.next();
                    Token::NotEq
                }
                '=' => Token::Eq,
                '!' => Token::Not,
                '(' => Token::Open,
                ')' => Token::Close,
                ',' => Token::Comma,
                '>' => Token::Gt,
                _ => Token::Lt,
            };
            tokens.push(tok);
            continue;
        }
        let mut end = s.len();
        while let Some(&(i, c)) = chars.peek() {
            if is_space(c) || is_special(c) {
                end = i;
                break;
            }
            chars.next();
        }
        let word = &s[start..end];
        tokens.push(match word {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word.to_string()),
        });
    }
    tokens.push(Token::End);
    tokens
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        tok
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let (key, negated) = match self.next() {
            Token::Not => match self.next() {
                Token::Ident(k) => (k, true),
                other => {
                    return Err(format!(
                        "found {} after '!', expected a label key",
                        other.describe()
                    ))
                }
            },
            Token::Ident(k) => (k, false),
            other => {
                return Err(format!(
                    "found {}, expected '!' or a label key",
                    other.describe()
                ))
            }
        };
        validate_label_key(&key)?;
        if negated {
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: BTreeSet::new(),
            });
        }
        let operator = match self.peek() {
            Token::End | Token::Comma => {
                return Ok(Requirement { key, operator: Operator::Exists, values: BTreeSet::new() })
            }
            Token::Eq | Token::DoubleEq => Operator::Equals,
            Token::NotEq => Operator::NotEquals,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Gt | Token::Lt => {
                return Err(format!(
                    "key {key:?}: '>' and '<' are not supported here (allowed operators: =, ==, !=, in, notin, and bare key or !key)"
                ))
            }
            other => {
                return Err(format!(
                    "found {} after key {key:?}, expected one of =, ==, !=, in, notin, ',' or the end",
                    other.describe()
                ))
            }
        };
        self.next();
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => BTreeSet::from([self.exact_value()?]),
        };
        for v in &values {
            validate_label_value(v).map_err(|e| format!("key {key:?}: {e}"))?;
        }
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// A value after `=`, `==` or `!=`; absent (`k=`) means the empty value.
    fn exact_value(&mut self) -> Result<String, String> {
        match self.peek().clone() {
            Token::End | Token::Comma => Ok(String::new()),
            // In value position the keywords are plain words (apimachinery does the same).
            Token::Ident(v) => {
                self.next();
                Ok(v)
            }
            Token::In => {
                self.next();
                Ok("in".into())
            }
            Token::NotIn => {
                self.next();
                Ok("notin".into())
            }
            other => Err(format!(
                "found {}, expected a label value",
                other.describe()
            )),
        }
    }

    /// `( v1, v2, ... )`; `()` and empty items stand for the empty value, as in apimachinery.
    fn value_set(&mut self) -> Result<BTreeSet<String>, String> {
        match self.next() {
            Token::Open => {}
            other => return Err(format!("found {}, expected '('", other.describe())),
        }
        let mut values = BTreeSet::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                Token::Close => {
                    if expect_value {
                        values.insert(String::new());
                    }
                    return Ok(values);
                }
                Token::Comma => {
                    if expect_value {
                        values.insert(String::new());
                    }
                    expect_value = true;
                }
                Token::Ident(v) if expect_value => {
                    values.insert(v);
                    expect_value = false;
                }
                Token::In if expect_value => {
                    values.insert("in".into());
                    expect_value = false;
                }
                Token::NotIn if expect_value => {
                    values.insert("notin".into());
                    expect_value = false;
                }
                Token::End => return Err("missing ')' to close the value list".into()),
                other => {
                    return Err(format!(
                        "found {} in a value list, expected a value, ',' or ')'",
                        other.describe()
                    ))
                }
            }
        }
    }
}

/// Whether `s` is `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` (a label name or non-empty value).
fn is_name_charset(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => edge(first) && edge(last) && b.iter().all(inner),
        _ => false,
    }
}

/// Whether `s` is a lowercase RFC 1123 DNS subdomain of at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= MAX_PREFIX_LEN
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            match (b.first(), b.last()) {
                (Some(first), Some(last)) => {
                    edge(first) && edge(last) && b.iter().all(|c| edge(c) || *c == b'-')
                }
                _ => false,
            }
        })
}

/// Checks a label key the way the API server does: an optional DNS-subdomain prefix
/// (≤ 253 chars, lowercase) and `/`, then a name of 1–63 characters matching
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(format!(
                "label key {key:?}: prefix before '/' must not be empty"
            ));
        }
        if !is_dns_subdomain(prefix) {
            return Err(format!(
                "label key {key:?}: prefix {prefix:?} must be a lowercase DNS subdomain of at most {MAX_PREFIX_LEN} characters (e.g. example.com)"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("label key {key:?}: name must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "label key {key:?}: name must be at most {MAX_NAME_LEN} characters"
        ));
    }
    if !is_name_charset(name) {
        return Err(format!(
            "label key {key:?}: name must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric"
        ));
    }
    Ok(())
}

/// Checks a label value the way the API server does: empty, or 1–63 characters matching
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > MAX_NAME_LEN {
        return Err(format!(
            "label value {value:?} must be at most {MAX_NAME_LEN} characters"
        ));
    }
    if !is_name_charset(value) {
        return Err(format!(
            "label value {value:?} must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(s: &str) -> LabelSelector {
        match s.parse() {
            Ok(sel) => sel,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn parses_every_operator_to_canonical_form() {
        let cases = [
            ("role=game-servers", "role=game-servers"),
            ("role==game-servers", "role=game-servers"),
            ("role != x", "role!=x"),
            ("tier in (b, a)", "tier in (a,b)"),
            ("tier notin (a,b,a)", "tier notin (a,b)"),
            ("gpu", "gpu"),
            ("!draining", "!draining"),
            (" ! draining ", "!draining"),
            ("z=1,a=2", "a=2,z=1"),
            ("example.com/pool=games", "example.com/pool=games"),
            ("k=", "k="),
            ("k in ()", "k in ()"),
            ("k=in", "k=in"),
            ("k in (in,notin)", "k in (in,notin)"),
            ("", ""),
            ("   ", ""),
            (
                "node.kubernetes.io/instance-type=s-4vcpu-8gb,role=game-servers,!cordoned",
                "!cordoned,node.kubernetes.io/instance-type=s-4vcpu-8gb,role=game-servers",
            ),
        ];
        for (input, canonical) in cases {
            let sel = parse(input);
            assert_eq!(sel.to_string(), canonical, "input {input:?}");
            // The canonical form parses to the same selector.
            assert_eq!(parse(canonical), sel, "canonical {canonical:?}");
        }
    }

    #[test]
    fn matches_with_kubernetes_semantics() {
        let node = labels(&[
            ("role", "game-servers"),
            ("tier", "a"),
            ("example.com/pool", "p1"),
        ]);
        let yes = [
            "role=game-servers",
            "role==game-servers",
            "role!=web",
            "missing!=x",
            "tier in (a,b)",
            "tier notin (c)",
            "missing notin (c)",
            "role",
            "!missing",
            "example.com/pool=p1",
            "role=game-servers,tier=a",
            "",
        ];
        let no = [
            "role=web",
            "role!=game-servers",
            "tier in (b,c)",
            "tier notin (a)",
            "missing",
            "!role",
            "missing=x",
            "missing in (x)",
            "role=game-servers,tier=b",
            "missing=",
        ];
        for s in yes {
            assert!(parse(s).matches(&node), "{s:?} should match");
        }
        for s in no {
            assert!(!parse(s).matches(&node), "{s:?} should not match");
        }
        assert!(parse("k=").matches(&labels(&[("k", "")])));
    }

    #[test]
    fn rejects_invalid_selectors() {
        let bad = [
            "role=game servers",
            "=value",
            "role=a,",
            ",role=a",
            "role in a",
            "role in (a",
            "role in (a b)",
            "role notin",
            "!",
            "!role=a",
            "role>3",
            "role<3",
            "role=a=b",
            "Example.com/pool=a",
            "/pool=a",
            "example.com/=a",
            "-role=a",
            "role-=a",
            "role=-a",
            "role=a_",
            "in=a",
            "role=(a)",
        ];
        for s in bad {
            assert!(
                s.parse::<LabelSelector>().is_err(),
                "{s:?} should be rejected"
            );
        }
        let long_name = format!("{}=a", "n".repeat(64));
        assert!(long_name.parse::<LabelSelector>().is_err());
        let long_value = format!("role={}", "v".repeat(64));
        assert!(long_value.parse::<LabelSelector>().is_err());
        let ok_value = format!("role={}", "v".repeat(63));
        assert!(ok_value.parse::<LabelSelector>().is_ok());
    }

    #[test]
    fn error_names_the_selector_and_the_problem() {
        let err = match "role=game servers".parse::<LabelSelector>() {
            Err(e) => e,
            Ok(s) => panic!("parsed {s}"),
        };
        let msg = err.to_string();
        assert!(msg.contains("role=game servers"), "{msg}");
        assert!(msg.contains("\"servers\""), "{msg}");
    }

    #[test]
    fn label_key_and_value_validation() {
        for ok in [
            "app",
            "app.kubernetes.io/name",
            "a",
            "A-b_c.d",
            "x.y/z",
            &"a".repeat(63),
        ] {
            assert_eq!(validate_label_key(ok), Ok(()), "{ok}");
        }
        let long_prefix = format!("{}/a", vec!["a".repeat(63); 5].join("."));
        for bad in [
            "",
            "-a",
            "a-",
            "a/b/c",
            "/a",
            "a/",
            "UPPER.com/a",
            "a b",
            &"a".repeat(64),
            &long_prefix,
        ] {
            assert!(validate_label_key(bad).is_err(), "{bad:?}");
        }
        for ok in ["", "game-server", "v1.2_3", &"v".repeat(63)] {
            assert_eq!(validate_label_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-a", "a-", "a b", "a/b", &"v".repeat(64), "é"] {
            assert!(validate_label_value(bad).is_err(), "{bad:?}");
        }
    }
}
