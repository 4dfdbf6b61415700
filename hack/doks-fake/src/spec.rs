//! The OpenAPI description, loaded at run time: its operations (method, path template,
//! parameters, request body, responses, security) and the checks of a request and of a
//! response against them. Nothing here names a field of the DigitalOcean API: every rule comes
//! from the file.

use std::collections::BTreeMap;
use std::path::Path;

use http::{HeaderMap, Method};
use serde_json::{Map, Value};

use crate::schema::{self, Direction};

/// Where a parameter travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A `{name}` segment of the path.
    Path,
    /// A `name=value` pair of the query string.
    Query,
    /// A request header.
    Header,
}

/// One declared parameter.
#[derive(Clone, Debug)]
pub struct Parameter {
    /// Its name.
    pub name: String,
    /// Where it travels.
    pub location: Location,
    /// Whether it must be present.
    pub required: bool,
    /// Its schema (a scalar type).
    pub schema: Value,
}

/// One documented response.
#[derive(Clone, Debug, Default)]
pub struct ResponseSpec {
    /// Documented headers and their schemas.
    pub headers: BTreeMap<String, (bool, Value)>,
    /// Body schema by media type; empty: no body.
    pub content: BTreeMap<String, Value>,
}

/// A security alternative: every scheme in it, with the scopes it needs.
pub type SecurityRequirement = BTreeMap<String, Vec<String>>;

/// One operation of the description.
#[derive(Clone, Debug)]
pub struct Operation {
    /// `operationId`.
    pub id: String,
    /// HTTP method.
    pub method: Method,
    /// Path template, e.g. `/v2/kubernetes/clusters/{cluster_id}`.
    pub path: String,
    segments: Vec<Segment>,
    /// Path-item and operation parameters (the operation's win).
    pub parameters: Vec<Parameter>,
    /// `requestBody`: whether required, and the schema by media type.
    pub request_body: Option<(bool, BTreeMap<String, Value>)>,
    /// Responses by status code (`"200"`, `"default"`).
    pub responses: BTreeMap<String, ResponseSpec>,
    /// Security alternatives (empty: anonymous).
    pub security: Vec<SecurityRequirement>,
}

#[derive(Clone, Debug)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A security scheme of `components.securitySchemes` that the fake can check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityScheme {
    /// `type: http, scheme: bearer`.
    Bearer,
}

/// The loaded description.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Every operation.
    pub operations: Vec<Operation>,
    schemes: BTreeMap<String, SecurityScheme>,
}

/// Why a request is refused, as the API would answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// DigitalOcean's error `id`.
    pub id: &'static str,
    /// Why.
    pub message: String,
    /// `Allow` header for a 405.
    pub allow: Option<String>,
}

impl Rejection {
    fn new(status: u16, id: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            id,
            message: message.into(),
            allow: None,
        }
    }
}

/// A request that conforms: its operation and its typed parameters and body.
#[derive(Clone, Debug)]
pub struct ValidRequest<'a> {
    /// The operation.
    pub operation: &'a Operation,
    /// Path parameters, typed.
    pub path: BTreeMap<String, Value>,
    /// Query parameters, typed, with the description's defaults filled in.
    pub query: BTreeMap<String, Value>,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

/// The credentials the fake accepts.
#[derive(Clone, Debug)]
pub struct Auth {
    /// The one valid bearer token.
    pub token: String,
    /// The token's scopes; `None`: every scope (a full-access token).
    pub scopes: Option<Vec<String>>,
}

fn yaml_to_json(v: serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => {
            Value::Array(items.into_iter().map(yaml_to_json).collect())
        }
        serde_yaml::Value::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    other => format!("{other:?}"),
                };
                out.insert(key, yaml_to_json(v));
            }
            Value::Object(out)
        }
        serde_yaml::Value::Tagged(t) => yaml_to_json(t.value),
    }
}

const METHODS: &[(&str, Method)] = &[
    ("get", Method::GET),
    ("put", Method::PUT),
    ("post", Method::POST),
    ("delete", Method::DELETE),
    ("patch", Method::PATCH),
    ("head", Method::HEAD),
    ("options", Method::OPTIONS),
];

fn parse_parameter(p: &Value, at: &str) -> Result<Parameter, String> {
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}: parameter without a name"))?
        .to_owned();
    let location = match p.get("in").and_then(Value::as_str) {
        Some("path") => Location::Path,
        Some("query") => Location::Query,
        Some("header") => Location::Header,
        other => {
            return Err(format!(
                "{at}: parameter {name:?} in {other:?} is not supported"
            ))
        }
    };
    let schema = p.get("schema").cloned().unwrap_or(Value::Bool(true));
    schema::check_supported(&schema, &format!("{at}/{name}/schema"))?;
    if let Some("array" | "object") = schema.get("type").and_then(Value::as_str) {
        return Err(format!(
            "{at}: parameter {name:?} of type array/object is not supported"
        ));
    }
    let required =
        location == Location::Path || p.get("required").and_then(Value::as_bool).unwrap_or(false);
    Ok(Parameter {
        name,
        location,
        required,
        schema,
    })
}

fn parse_content(content: Option<&Value>, at: &str) -> Result<BTreeMap<String, Value>, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(media)) = content {
        for (media_type, m) in media {
            let schema = m.get("schema").cloned().unwrap_or(Value::Bool(true));
            schema::check_supported(&schema, &format!("{at}/{media_type}/schema"))?;
            out.insert(media_type.clone(), schema);
        }
    }
    Ok(out)
}

fn parse_security(v: &Value, at: &str) -> Result<Vec<SecurityRequirement>, String> {
    let Value::Array(alternatives) = v else {
        return Err(format!("{at}: security must be a list"));
    };
    alternatives
        .iter()
        .map(|alt| {
            let Value::Object(schemes) = alt else {
                return Err(format!("{at}: a security requirement must be a mapping"));
            };
            Ok(schemes
                .iter()
                .map(|(name, scopes)| {
                    let scopes = scopes
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    (name.clone(), scopes)
                })
                .collect())
        })
        .collect()
}

impl Spec {
    /// Reads and checks the description at `path`.
    pub fn load(path: &Path) -> Result<Spec, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the OpenAPI description {}: {e}",
                path.display()
            )
        })?;
        Spec::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks a description.
    pub fn parse(text: &str) -> Result<Spec, String> {
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        let doc = yaml_to_json(yaml);
        let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
        if !version.starts_with("3.0") {
            return Err(format!(
                "openapi version {version:?}: the fake's validator implements OpenAPI 3.0 schemas"
            ));
        }
        let global_security = match doc.get("security") {
            Some(v) => parse_security(v, "#/security")?,
            None => Vec::new(),
        };
        let mut schemes = BTreeMap::new();
        if let Some(Value::Object(defs)) = doc.pointer("/components/securitySchemes") {
            for (name, def) in defs {
                let ty = def.get("type").and_then(Value::as_str);
                let scheme = def.get("scheme").and_then(Value::as_str);
                if ty == Some("http") && scheme.is_some_and(|s| s.eq_ignore_ascii_case("bearer")) {
                    schemes.insert(name.clone(), SecurityScheme::Bearer);
                }
            }
        }
        let Some(Value::Object(paths)) = doc.get("paths") else {
            return Err("no paths".into());
        };
        let mut operations = Vec::new();
        for (template, item) in paths {
            let at = format!("#/paths/{template}");
            let mut shared_params = Vec::new();
            if let Some(Value::Array(ps)) = item.get("parameters") {
                for p in ps {
                    shared_params.push(parse_parameter(p, &at)?);
                }
            }
            let segments: Vec<Segment> = template
                .trim_start_matches('/')
                .split('/')
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(name) => Segment::Param(name.to_owned()),
                        None => Segment::Literal(s.to_owned()),
                    },
                )
                .collect();
            for (key, method) in METHODS {
                let Some(op) = item.get(*key) else { continue };
                let at = format!("{at}/{key}");
                let id = op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{at}: no operationId"))?
                    .to_owned();
                let mut parameters = shared_params.clone();
                if let Some(Value::Array(ps)) = op.get("parameters") {
                    for p in ps {
                        let p = parse_parameter(p, &at)?;
                        parameters.retain(|q| !(q.name == p.name && q.location == p.location));
                        parameters.push(p);
                    }
                }
                for seg in &segments {
                    if let Segment::Param(name) = seg {
                        if !parameters
                            .iter()
                            .any(|p| p.location == Location::Path && &p.name == name)
                        {
                            return Err(format!("{at}: path parameter {name:?} is not declared"));
                        }
                    }
                }
                let request_body = match op.get("requestBody") {
                    Some(rb) => Some((
                        rb.get("required").and_then(Value::as_bool).unwrap_or(false),
                        parse_content(rb.get("content"), &format!("{at}/requestBody"))?,
                    )),
                    None => None,
                };
                let mut responses = BTreeMap::new();
                if let Some(Value::Object(rs)) = op.get("responses") {
                    for (code, r) in rs {
                        let rat = format!("{at}/responses/{code}");
                        let mut headers = BTreeMap::new();
                        if let Some(Value::Object(hs)) = r.get("headers") {
                            for (name, h) in hs {
                                let schema = h.get("schema").cloned().unwrap_or(Value::Bool(true));
                                schema::check_supported(&schema, &format!("{rat}/headers/{name}"))?;
                                let required =
                                    h.get("required").and_then(Value::as_bool).unwrap_or(false);
                                headers.insert(name.to_ascii_lowercase(), (required, schema));
                            }
                        }
                        let content = parse_content(r.get("content"), &rat)?;
                        responses.insert(code.clone(), ResponseSpec { headers, content });
                    }
                }
                let security = match op.get("security") {
                    Some(v) => parse_security(v, &at)?,
                    None => global_security.clone(),
                };
                for alt in &security {
                    for name in alt.keys() {
                        if !schemes.contains_key(name) {
                            return Err(format!(
                                "{at}: security scheme {name:?} is not an http bearer scheme the \
                                 fake can check"
                            ));
                        }
                    }
                }
                operations.push(Operation {
                    id,
                    method: method.clone(),
                    path: template.clone(),
                    segments: segments.clone(),
                    parameters,
                    request_body,
                    responses,
                    security,
                });
            }
        }
        Ok(Spec {
            operations,
            schemes,
        })
    }

    /// The operation with this `operationId`.
    pub fn operation(&self, id: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.id == id)
    }

    /// Checks a request against the description: path and method, bearer token and scopes,
    /// parameters (names, types, bounds), content type and body schema.
    pub fn check_request<'a>(
        &'a self,
        method: &Method,
        raw_path: &str,
        raw_query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        auth: &Auth,
    ) -> Result<ValidRequest<'a>, Rejection> {
        // Route: the path first, then the method.
        let segments: Vec<String> = raw_path
            .trim_start_matches('/')
            .split('/')
            .map(|s| {
                percent_decode(s).ok_or_else(|| {
                    Rejection::new(
                        400,
                        "bad_request",
                        format!("path segment {s:?} is not valid percent-encoded UTF-8"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let mut by_path: Vec<(&Operation, BTreeMap<String, String>, usize)> = Vec::new();
        for op in &self.operations {
            if op.segments.len() != segments.len() {
                continue;
            }
            let mut params = BTreeMap::new();
            let mut literals = 0;
            let fits = op.segments.iter().zip(&segments).all(|(t, s)| match t {
                Segment::Literal(l) => {
                    literals += 1;
                    l == s
                }
                Segment::Param(name) => {
                    params.insert(name.clone(), s.clone());
                    !s.is_empty()
                }
            });
            if fits {
                by_path.push((op, params, literals));
            }
        }
        if by_path.is_empty() {
            return Err(Rejection::new(
                404,
                "not_found",
                format!("no operation of the API description has the path {raw_path}"),
            ));
        }
        let best = by_path.iter().map(|(_, _, l)| *l).max().unwrap_or(0);
        by_path.retain(|(_, _, l)| *l == best);
        let Some((op, path_raw, _)) = by_path.iter().find(|(op, _, _)| op.method == *method) else {
            let allow: Vec<&str> = by_path
                .iter()
                .map(|(op, _, _)| op.method.as_str())
                .collect();
            let mut r = Rejection::new(
                405,
                "method_not_allowed",
                format!(
                    "{method} is not an operation of {} in the API description (allowed: {})",
                    by_path
                        .first()
                        .map_or(raw_path, |(op, _, _)| op.path.as_str()),
                    allow.join(", ")
                ),
            );
            r.allow = Some(allow.join(", "));
            return Err(r);
        };

        self.check_auth(op, headers, auth)?;

        // Parameters.
        let mut path = BTreeMap::new();
        let mut query = BTreeMap::new();
        for p in op
            .parameters
            .iter()
            .filter(|p| p.location == Location::Path)
        {
            let raw = path_raw.get(&p.name).map(String::as_str).unwrap_or("");
            path.insert(p.name.clone(), typed_parameter(p, raw)?);
        }
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(raw_query.unwrap_or("").as_bytes()) {
            let (name, value) = (name.into_owned(), value.into_owned());
            let Some(p) = op
                .parameters
                .iter()
                .find(|p| p.location == Location::Query && p.name == name)
            else {
                let known: Vec<&str> = op
                    .parameters
                    .iter()
                    .filter(|p| p.location == Location::Query)
                    .map(|p| p.name.as_str())
                    .collect();
                return Err(Rejection::new(
                    400,
                    "bad_request",
                    format!(
                        "query parameter {name:?} is not a parameter of {} {} (declared: {})",
                        op.method,
                        op.path,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            if seen.insert(name.clone(), value.clone()).is_some() {
                return Err(Rejection::new(
                    400,
                    "bad_request",
                    format!("query parameter {name:?} is given more than once"),
                ));
            }
            query.insert(name, typed_parameter(p, &value)?);
        }
        for p in op
            .parameters
            .iter()
            .filter(|p| p.location != Location::Path)
        {
            match p.location {
                Location::Query if !query.contains_key(&p.name) => {
                    if p.required {
                        return Err(Rejection::new(
                            400,
                            "bad_request",
                            format!("required query parameter {:?} is missing", p.name),
                        ));
                    }
                    if let Some(default) = p.schema.get("default") {
                        query.insert(p.name.clone(), default.clone());
                    }
                }
                Location::Header => match headers.get(&p.name).map(|v| v.to_str()) {
                    Some(Ok(v)) => {
                        typed_parameter(p, v)?;
                    }
                    Some(Err(_)) => {
                        return Err(Rejection::new(
                            400,
                            "bad_request",
                            format!("header {:?} is not visible ASCII", p.name),
                        ))
                    }
                    None if p.required => {
                        return Err(Rejection::new(
                            400,
                            "bad_request",
                            format!("required header {:?} is missing", p.name),
                        ))
                    }
                    None => {}
                },
                _ => {}
            }
        }

        // Body.
        let body = match &op.request_body {
            None => {
                if !body.is_empty() {
                    return Err(Rejection::new(
                        400,
                        "bad_request",
                        format!("{} {} takes no request body", op.method, op.path),
                    ));
                }
                None
            }
            Some((required, content)) => {
                if body.is_empty() {
                    if *required {
                        return Err(Rejection::new(
                            400,
                            "bad_request",
                            format!("{} {} requires a request body", op.method, op.path),
                        ));
                    }
                    None
                } else {
                    let media = headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| {
                            v.split(';')
                                .next()
                                .unwrap_or("")
                                .trim()
                                .to_ascii_lowercase()
                        })
                        .unwrap_or_default();
                    let Some(schema) = content.get(&media) else {
                        return Err(Rejection::new(
                            415,
                            "unsupported_media_type",
                            format!(
                                "Content-Type {media:?} is not one the description accepts ({})",
                                content.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    };
                    let value: Value = serde_json::from_slice(body).map_err(|e| {
                        Rejection::new(
                            400,
                            "bad_request",
                            format!("the request body is not valid JSON: {e}"),
                        )
                    })?;
                    let violations = schema::validate(schema, &value, Direction::Request);
                    if !violations.is_empty() {
                        return Err(Rejection::new(
                            422,
                            "unprocessable_entity",
                            format!(
                                "the request body does not match the schema of {} {}: {}",
                                op.method,
                                op.path,
                                schema::describe(&violations)
                            ),
                        ));
                    }
                    Some(value)
                }
            }
        };
        Ok(ValidRequest {
            operation: op,
            path,
            query,
            body,
        })
    }

    fn check_auth(
        &self,
        op: &Operation,
        headers: &HeaderMap,
        auth: &Auth,
    ) -> Result<(), Rejection> {
        if op.security.is_empty() {
            return Ok(());
        }
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_owned())
            });
        let mut last = Rejection::new(
            401,
            "unauthorized",
            "Unable to authenticate you: no Authorization: Bearer header",
        );
        for alt in &op.security {
            let mut ok = true;
            for (name, scopes) in alt {
                match self.schemes.get(name) {
                    Some(SecurityScheme::Bearer) => match &presented {
                        None => {
                            ok = false;
                        }
                        Some(t) if *t != auth.token => {
                            last = Rejection::new(
                                401,
                                "unauthorized",
                                "Unable to authenticate you: the bearer token is not valid",
                            );
                            ok = false;
                        }
                        Some(_) => {
                            if let Some(granted) = &auth.scopes {
                                let missing: Vec<&String> =
                                    scopes.iter().filter(|s| !granted.contains(s)).collect();
                                if !missing.is_empty() {
                                    last = Rejection::new(
                                        403,
                                        "forbidden",
                                        format!(
                                            "You are not authorized to perform this operation: \
                                             the token lacks the scope(s) {} that {} {} requires",
                                            missing
                                                .iter()
                                                .map(|s| s.as_str())
                                                .collect::<Vec<_>>()
                                                .join(", "),
                                            op.method,
                                            op.path
                                        ),
                                    );
                                    ok = false;
                                }
                            }
                        }
                    },
                    None => ok = false,
                }
            }
            if ok {
                return Ok(());
            }
        }
        Err(last)
    }

    /// Checks an answer the fake is about to send against the operation's documented
    /// responses: a documented status (or `default`), documented header types, and the body's
    /// schema. Returns every violation.
    pub fn check_response(
        &self,
        op: &Operation,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Vec<String> {
        let mut out = Vec::new();
        let spec = match op
            .responses
            .get(&status.to_string())
            .or_else(|| op.responses.get("default"))
        {
            Some(s) => s,
            None => {
                out.push(format!(
                    "status {status} is not documented and there is no default"
                ));
                return out;
            }
        };
        for (name, (required, schema)) in &spec.headers {
            match headers.get(name.as_str()).map(|v| v.to_str()) {
                Some(Ok(v)) => {
                    let p = Parameter {
                        name: name.clone(),
                        location: Location::Header,
                        required: *required,
                        schema: schema.clone(),
                    };
                    if let Err(r) = typed_parameter(&p, v) {
                        out.push(format!("header {name}: {}", r.message));
                    }
                }
                Some(Err(_)) => out.push(format!("header {name} is not visible ASCII")),
                None if *required => out.push(format!("required header {name} is missing")),
                None => {}
            }
        }
        if spec.content.is_empty() {
            if !body.is_empty() {
                out.push(format!(
                    "status {status} documents no body, but one was sent"
                ));
            }
            return out;
        }
        let media = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let Some(schema) = spec.content.get(&media) else {
            out.push(format!(
                "Content-Type {media:?} is not documented for status {status}"
            ));
            return out;
        };
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => out.extend(
                schema::validate(schema, &value, Direction::Response)
                    .iter()
                    .map(|v| format!("body{v}", v = prefix_pointer(v))),
            ),
            Err(e) => out.push(format!("the body is not JSON: {e}")),
        }
        out
    }
}

fn prefix_pointer(v: &schema::Violation) -> String {
    if v.pointer.is_empty() {
        format!(": {}", v.message)
    } else {
        format!("{}: {}", v.pointer, v.message)
    }
}

/// A raw parameter value typed by its schema, then validated against it.
fn typed_parameter(p: &Parameter, raw: &str) -> Result<Value, Rejection> {
    let where_ = match p.location {
        Location::Path => "path parameter",
        Location::Query => "query parameter",
        Location::Header => "header",
    };
    let bad =
        |why: String| Rejection::new(400, "bad_request", format!("{where_} {:?}: {why}", p.name));
    let value = match p.schema.get("type").and_then(Value::as_str) {
        Some("integer") => {
            let digits = raw.strip_prefix('-').unwrap_or(raw);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("{raw:?} is not an integer")));
            }
            raw.parse::<i64>()
                .map(Value::from)
                .map_err(|e| bad(format!("{raw:?} is not an integer: {e}")))?
        }
        Some("number") => raw
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad(format!("{raw:?} is not a number")))?,
        Some("boolean") => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad(format!("{raw:?} is not true or false"))),
        },
        _ => Value::String(raw.to_owned()),
    };
    let violations = schema::validate(&p.schema, &value, Direction::Request);
    if violations.is_empty() {
        Ok(value)
    } else {
        Err(bad(schema::describe(&violations)))
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
