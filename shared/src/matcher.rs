//! Request matching, compiled once at configure time and evaluated per request without
//! allocating.
//!
//! Config shape (every field optional; all present conditions must hold — AND; an empty match
//! matches every request):
//!
//! ```json
//! {
//!   "hosts": ["api.example.com", "*.example.com", "api.*"],
//!   "path": {"prefix": "/v1/"},
//!   "methods": ["GET", "HEAD"],
//!   "headers": [{"name": "x-env", "exact": "canary"}, {"name": "x-debug", "absent": true}]
//! }
//! ```
//!
//! - **hosts** (any of): exact, `*.suffix` / `*suffix` (the `*` must cover at least one
//!   character, so `*.example.com` does not match `example.com`), `prefix.*`, or `*` alone.
//!   Case-insensitive; the port is stripped from `:authority` first.
//! - **path** (one of, on `:path` without query string): `exact`, `prefix` (plain string prefix:
//!   `/api` also matches `/apiv2`; write `/api/` to mean a directory), or `glob` — a small,
//!   linear-time segment template instead of a regex: `*` matches any run of characters inside
//!   one segment (`/img/*.png`, `/users/*/posts`), and `**` as a whole segment matches zero or
//!   more segments (`/static/**`). No other glob syntax (`?`, `[…]`, `{…}`) is accepted.
//! - **methods** (any of): exact, upper-cased at compile time.
//! - **headers** (all of): each names a header and exactly one of `present: true|false`,
//!   `absent: true`, `exact`, `prefix`, `suffix`, `contains`. Value conditions hold when **any**
//!   value of a repeated header satisfies them; names are case-insensitive, values are not.
//!
//! A bad pattern is an [`InvalidConfig`] whose path is relative to the match object
//! (e.g. `path.glob`, `hosts[1]`); wrap it with [`InvalidConfig::within`].

use serde::Deserialize;

use crate::config::{InvalidConfig, null_as_default};
use crate::request::{RequestView, host_without_port};

// === raw config ===

/// The JSON form of a [`RouteMatch`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RawRouteMatch {
    /// Host patterns, any of which may match.
    #[serde(default, deserialize_with = "null_as_default")]
    pub hosts: Vec<String>,
    /// Path condition.
    pub path: Option<RawPathMatch>,
    /// HTTP methods, any of which may match.
    #[serde(default, deserialize_with = "null_as_default")]
    pub methods: Vec<String>,
    /// Header conditions, all of which must hold.
    #[serde(default, deserialize_with = "null_as_default")]
    pub headers: Vec<RawHeaderMatch>,
}

/// The JSON form of a [`PathMatch`]: `{"exact": …}`, `{"prefix": …}` or `{"glob": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RawPathMatch {
    /// The whole path (without query) equals this.
    Exact(String),
    /// The path (without query) starts with this.
    Prefix(String),
    /// The path (without query) matches this segment template.
    Glob(String),
}

/// The JSON form of a [`HeaderMatch`]: a name and exactly one condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RawHeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// `true`: the header is present; `false`: it is absent.
    pub present: Option<bool>,
    /// `true`: the header is absent.
    pub absent: Option<bool>,
    /// Some value equals this.
    pub exact: Option<String>,
    /// Some value starts with this.
    pub prefix: Option<String>,
    /// Some value ends with this.
    pub suffix: Option<String>,
    /// Some value contains this.
    pub contains: Option<String>,
}

crate::object_only!(RawRouteMatch, RawHeaderMatch);

// === hosts ===

/// One compiled host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// Equal, ignoring ASCII case.
    Exact(String),
    /// `*<suffix>`: ends with the suffix after at least one more character.
    Suffix(String),
    /// `<prefix>*`: starts with the prefix before at least one more character.
    Prefix(String),
}

impl HostPattern {
    /// Compiles `api.example.com`, `*.example.com`, `api.*` or `*`.
    ///
    /// # Errors
    ///
    /// Empty patterns, a `*` in the middle, two `*`, a port, or characters no host name has.
    pub fn compile(pattern: &str) -> Result<Self, InvalidConfig> {
        let fail = |reason: &str| {
            Err(InvalidConfig::root(format!(
                "host pattern `{pattern}`: {reason}"
            )))
        };
        if pattern.is_empty() {
            return fail("must not be empty");
        }
        if pattern == "*" {
            return Ok(Self::Any);
        }
        let valid = |c: char| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*' | '[' | ']' | ':')
        };
        if !pattern.chars().all(valid) {
            return fail(
                "only letters, digits, `.`, `-`, `_` and one leading or trailing `*` are allowed",
            );
        }
        if host_without_port(pattern) != pattern {
            return fail("must not include a port (ports are ignored when matching)");
        }
        let lower = pattern.to_ascii_lowercase();
        let stars = lower.matches('*').count();
        match (stars, lower.strip_prefix('*'), lower.strip_suffix('*')) {
            (0, _, _) => Ok(Self::Exact(lower)),
            (1, Some(suffix), _) => Ok(Self::Suffix(suffix.to_owned())),
            (1, None, Some(prefix)) => Ok(Self::Prefix(prefix.to_owned())),
            _ => fail("`*` is allowed only once, at the start or the end"),
        }
    }

    /// Whether `host` (already without port) matches, ignoring ASCII case.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.as_bytes();
        match self {
            Self::Any => true,
            Self::Exact(exact) => host.eq_ignore_ascii_case(exact.as_bytes()),
            Self::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix.as_bytes()))
            }
            Self::Prefix(prefix) => {
                host.len() > prefix.len()
                    && host
                        .get(..prefix.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
            }
        }
    }
}

// === paths ===

/// One segment of a [`PathGlob`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobSegment {
    /// `**`: zero or more whole segments.
    AnySegments,
    /// Literal pieces separated by `*` (any run of characters within the segment).
    Pieces(Vec<String>),
}

impl GlobSegment {
    fn matches(&self, segment: &str) -> bool {
        let Self::Pieces(pieces) = self else {
            return true;
        };
        let Some((first, rest)) = pieces.split_first() else {
            return segment.is_empty();
        };
        let Some(mut remaining) = segment.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            // No `*` at all: the literal must be the whole segment.
            return remaining.is_empty();
        };
        // Leftmost-first placement of each middle piece is optimal for `*`-only globs.
        for piece in middle {
            match remaining.find(piece.as_str()) {
                Some(at) => remaining = remaining.get(at + piece.len()..).unwrap_or(""),
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }
}

/// A compiled path template (`/users/*/posts`, `/static/**`, `/img/*.png`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    segments: Vec<GlobSegment>,
}

impl PathGlob {
    /// Compiles a template; see the [module docs](self) for the syntax.
    ///
    /// # Errors
    ///
    /// A template that does not start with `/`, uses `**` inside a segment, or uses unsupported
    /// glob syntax.
    pub fn compile(pattern: &str) -> Result<Self, InvalidConfig> {
        let fail = |reason: &str| Err(InvalidConfig::root(format!("glob `{pattern}`: {reason}")));
        let Some(body) = pattern.strip_prefix('/') else {
            return fail("must start with `/`");
        };
        if let Some(bad) = pattern
            .chars()
            .find(|c| matches!(c, '?' | '[' | ']' | '{' | '}' | '\\'))
        {
            return fail(&format!(
                "unsupported character `{bad}` (only `*` and `**` are special)"
            ));
        }
        let mut segments = Vec::new();
        for segment in body.split('/') {
            if segment == "**" {
                // Consecutive `**` are the same as one.
                if segments.last() != Some(&GlobSegment::AnySegments) {
                    segments.push(GlobSegment::AnySegments);
                }
            } else if segment.contains("**") {
                return fail("`**` must be a whole path segment");
            } else {
                segments.push(GlobSegment::Pieces(
                    segment.split('*').map(str::to_owned).collect(),
                ));
            }
        }
        Ok(Self { segments })
    }

    /// Whether `path` (without query string) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        // Classic wildcard matching with one backtrack point, over segments: O(pattern × path)
        // in the worst case, never exponential, and no allocation.
        let pattern = &self.segments;
        let mut rest = body.split('/');
        let mut p = 0;
        // (pattern index after the last `**`, path position where that `**` currently ends)
        let mut backtrack: Option<(usize, std::str::Split<'_, char>)> = None;
        loop {
            let mut after = rest.clone();
            let Some(segment) = after.next() else { break };
            match pattern.get(p) {
                Some(GlobSegment::AnySegments) => {
                    p += 1;
                    backtrack = Some((p, rest.clone()));
                    continue;
                }
                Some(glob) if glob.matches(segment) => {
                    p += 1;
                    rest = after;
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last `**` swallow one more segment and retry after it.
            let Some((resume, star_end)) = backtrack.as_mut() else {
                return false;
            };
            if star_end.next().is_none() {
                return false;
            }
            p = *resume;
            rest = star_end.clone();
        }
        pattern
            .get(p..)
            .is_some_and(|tail| tail.iter().all(|s| *s == GlobSegment::AnySegments))
    }
}

/// A compiled path condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path without query equals this.
    Exact(String),
    /// The path without query starts with this.
    Prefix(String),
    /// The path without query matches this template.
    Glob(PathGlob),
}

impl PathMatch {
    /// Compiles the JSON form; errors are at `path.exact` / `path.prefix` / `path.glob`.
    ///
    /// # Errors
    ///
    /// Empty or relative patterns and bad globs.
    pub fn compile(raw: &RawPathMatch) -> Result<Self, InvalidConfig> {
        let must_be_absolute = |field: &str, value: &str| {
            if value.starts_with('/') {
                Ok(())
            } else {
                Err(InvalidConfig::at(
                    field,
                    format!("path `{value}` must start with `/`"),
                ))
            }
        };
        match raw {
            RawPathMatch::Exact(exact) => {
                must_be_absolute("exact", exact)?;
                Ok(Self::Exact(exact.clone()))
            }
            RawPathMatch::Prefix(prefix) => {
                must_be_absolute("prefix", prefix)?;
                Ok(Self::Prefix(prefix.clone()))
            }
            RawPathMatch::Glob(glob) => PathGlob::compile(glob)
                .map(Self::Glob)
                .map_err(|e| e.within("glob")),
        }
    }

    /// Whether `path` (without query string) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Self::Glob(glob) => glob.matches(path),
        }
    }
}

// === headers ===

/// What a [`HeaderMatch`] requires of a header's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCondition {
    /// At least one value.
    Present,
    /// No value.
    Absent,
    /// Some value equals this.
    Exact(Vec<u8>),
    /// Some value starts with this.
    Prefix(Vec<u8>),
    /// Some value ends with this.
    Suffix(Vec<u8>),
    /// Some value contains this (non-empty).
    Contains(Vec<u8>),
}

/// A compiled header condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    name: String,
    condition: HeaderCondition,
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl HeaderMatch {
    /// A condition on header `name` (lower-cased).
    pub fn new(name: &str, condition: HeaderCondition) -> Self {
        Self {
            name: name.to_ascii_lowercase(),
            condition,
        }
    }

    /// Compiles the JSON form; errors are at `name` or at the condition's field.
    ///
    /// # Errors
    ///
    /// An invalid header name, or not exactly one condition.
    pub fn compile(raw: &RawHeaderMatch) -> Result<Self, InvalidConfig> {
        let name = raw.name.strip_prefix(':').unwrap_or(&raw.name);
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(InvalidConfig::at(
                "name",
                format!("`{}` is not a valid header name", raw.name),
            ));
        }
        let bytes = |s: &String| s.as_bytes().to_vec();
        let mut conditions = Vec::new();
        if let Some(present) = raw.present {
            conditions.push(if present {
                HeaderCondition::Present
            } else {
                HeaderCondition::Absent
            });
        }
        if let Some(absent) = raw.absent {
            conditions.push(if absent {
                HeaderCondition::Absent
            } else {
                HeaderCondition::Present
            });
        }
        conditions.extend(raw.exact.as_ref().map(bytes).map(HeaderCondition::Exact));
        conditions.extend(raw.prefix.as_ref().map(bytes).map(HeaderCondition::Prefix));
        conditions.extend(raw.suffix.as_ref().map(bytes).map(HeaderCondition::Suffix));
        if let Some(contains) = &raw.contains {
            if contains.is_empty() {
                return Err(InvalidConfig::at(
                    "contains",
                    "must not be empty (use `present: true`)",
                ));
            }
            conditions.push(HeaderCondition::Contains(bytes(contains)));
        }
        let mut conditions = conditions.into_iter();
        match (conditions.next(), conditions.next()) {
            (Some(condition), None) => Ok(Self::new(&raw.name, condition)),
            _ => Err(InvalidConfig::root(
                "exactly one of `present`, `absent`, `exact`, `prefix`, `suffix`, `contains` must be set",
            )),
        }
    }

    /// Whether the request satisfies this condition.
    pub fn matches(&self, request: &RequestView) -> bool {
        let mut values = request.header_values(&self.name);
        match &self.condition {
            HeaderCondition::Present => values.next().is_some(),
            HeaderCondition::Absent => values.next().is_none(),
            HeaderCondition::Exact(exact) => values.any(|v| v == exact.as_slice()),
            HeaderCondition::Prefix(prefix) => values.any(|v| v.starts_with(prefix)),
            HeaderCondition::Suffix(suffix) => values.any(|v| v.ends_with(suffix)),
            HeaderCondition::Contains(needle) => {
                values.any(|v| v.windows(needle.len()).any(|w| w == needle.as_slice()))
            }
        }
    }
}

// === routes ===

/// A compiled request condition: hosts AND path AND methods AND headers (absent parts hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteMatch {
    hosts: Vec<HostPattern>,
    path: Option<PathMatch>,
    methods: Vec<String>,
    headers: Vec<HeaderMatch>,
}

impl RouteMatch {
    /// Matches every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Compiles the JSON form. Error paths are relative to the match object (`hosts[0]`,
    /// `path.glob`, `methods[1]`, `headers[2].name`).
    ///
    /// # Errors
    ///
    /// The first invalid pattern, with its path.
    pub fn compile(raw: &RawRouteMatch) -> Result<Self, InvalidConfig> {
        let hosts = raw
            .hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                HostPattern::compile(host).map_err(|e| e.within(&format!("hosts[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let path = raw
            .path
            .as_ref()
            .map(|path| PathMatch::compile(path).map_err(|e| e.within("path")))
            .transpose()?;
        let methods = raw
            .methods
            .iter()
            .enumerate()
            .map(|(i, method)| {
                if !method.is_empty() && method.chars().all(is_token_char) {
                    Ok(method.to_ascii_uppercase())
                } else {
                    Err(InvalidConfig::at(
                        format!("methods[{i}]"),
                        format!("`{method}` is not an HTTP method"),
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let headers = raw
            .headers
            .iter()
            .enumerate()
            .map(|(i, header)| {
                HeaderMatch::compile(header).map_err(|e| e.within(&format!("headers[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            hosts,
            path,
            methods,
            headers,
        })
    }

    /// Adds a host pattern (builder form, for code-built matches).
    #[must_use]
    pub fn with_host(mut self, host: HostPattern) -> Self {
        self.hosts.push(host);
        self
    }

    /// Sets the path condition.
    #[must_use]
    pub fn with_path(mut self, path: PathMatch) -> Self {
        self.path = Some(path);
        self
    }

    /// Adds an allowed method (upper-cased).
    #[must_use]
    pub fn with_method(mut self, method: &str) -> Self {
        self.methods.push(method.to_ascii_uppercase());
        self
    }

    /// Adds a header condition.
    #[must_use]
    pub fn with_header(mut self, header: HeaderMatch) -> Self {
        self.headers.push(header);
        self
    }

    /// Whether `request` satisfies every condition.
    pub fn matches(&self, request: &RequestView) -> bool {
        let host = host_without_port(request.authority());
        (self.hosts.is_empty() || self.hosts.iter().any(|p| p.matches(host)))
            && self
                .path
                .as_ref()
                .is_none_or(|p| p.matches(request.path_without_query()))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == request.method()))
            && self.headers.iter().all(|h| h.matches(request))
    }
}

impl TryFrom<RawRouteMatch> for RouteMatch {
    type Error = InvalidConfig;

    fn try_from(raw: RawRouteMatch) -> Result<Self, InvalidConfig> {
        Self::compile(&raw)
    }
}

/// An ordered rule list: the first rule whose [`RouteMatch`] holds wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstMatch<T> {
    rules: Vec<(RouteMatch, T)>,
}

impl<T> Default for FirstMatch<T> {
    fn default() -> Self {
        Self { rules: Vec::new() }
    }
}

impl<T> FirstMatch<T> {
    /// A list from already compiled rules, in priority order.
    pub fn new(rules: Vec<(RouteMatch, T)>) -> Self {
        Self { rules }
    }

    /// Compiles raw rules in order; an error from `compile_rule` for rule `i` is reported at
    /// `<field>[i].<its path>` (e.g. `rules[2].match.hosts[0]`).
    ///
    /// # Errors
    ///
    /// The first rule that fails to compile.
    pub fn compile<R>(
        field: &str,
        raw: Vec<R>,
        mut compile_rule: impl FnMut(R) -> Result<(RouteMatch, T), InvalidConfig>,
    ) -> Result<Self, InvalidConfig> {
        let rules = raw
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                compile_rule(rule).map_err(|e| e.within(&format!("[{i}]")).within(field))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { rules })
    }

    /// The first matching rule's value.
    pub fn find(&self, request: &RequestView) -> Option<&T> {
        self.find_indexed(request).map(|(_, value)| value)
    }

    /// The first matching rule's index and value.
    pub fn find_indexed(&self, request: &RequestView) -> Option<(usize, &T)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, (matcher, _))| matcher.matches(request))
            .map(|(i, (_, value))| (i, value))
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules in order.
    pub fn iter(&self) -> impl Iterator<Item = &(RouteMatch, T)> {
        self.rules.iter()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::parse_raw;

    fn route(json: &str) -> RouteMatch {
        RouteMatch::compile(&parse_raw::<RawRouteMatch>(json.as_bytes()).unwrap()).unwrap()
    }

    fn compile_error(json: &str) -> String {
        let raw = parse_raw::<RawRouteMatch>(json.as_bytes()).unwrap();
        RouteMatch::compile(&raw).unwrap_err().to_string()
    }

    #[test]
    fn host_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("api.example.com", "api.example.com", true),
            ("api.example.com", "API.Example.COM", true),
            ("api.example.com", "api.example.com:8443", true),
            ("api.example.com", "www.example.com", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "a.example.com.evil.net", false),
            ("*-api.example.com", "eu-api.example.com", true),
            ("api.*", "api.example.com", true),
            ("api.*", "api.", false),
            ("api.*", "www.api.com", false),
            ("*", "anything:1", true),
            ("[::1]", "[::1]:8080", true),
        ];
        for (pattern, authority, expected) in cases {
            let matcher = route(&format!(r#"{{"hosts": ["{pattern}"]}}"#));
            let request = RequestView::build("GET", authority, "/", &[]);
            assert_eq!(
                matcher.matches(&request),
                *expected,
                "{pattern} vs {authority}"
            );
        }
    }

    #[test]
    fn path_conditions() {
        let cases: &[(&str, &str, bool)] = &[
            (r#"{"exact": "/health"}"#, "/health", true),
            (r#"{"exact": "/health"}"#, "/health?verbose=1", true),
            (r#"{"exact": "/health"}"#, "/health/", false),
            (r#"{"prefix": "/api/"}"#, "/api/v1", true),
            (r#"{"prefix": "/api"}"#, "/apiv2", true),
            (r#"{"prefix": "/api/"}"#, "/api", false),
            (r#"{"glob": "/users/*/posts"}"#, "/users/42/posts", true),
            (r#"{"glob": "/users/*/posts"}"#, "/users/42/43/posts", false),
            (r#"{"glob": "/users/*/posts"}"#, "/users/42/posts/", false),
            (r#"{"glob": "/static/**"}"#, "/static", true),
            (r#"{"glob": "/static/**"}"#, "/static/a/b/c.css", true),
            (r#"{"glob": "/static/**"}"#, "/staticx/a", false),
            (r#"{"glob": "/img/*.png"}"#, "/img/cat.png?size=2", true),
            (r#"{"glob": "/img/*.png"}"#, "/img/cat.jpg", false),
            (r#"{"glob": "/img/*.png"}"#, "/img/a/cat.png", false),
            (r#"{"glob": "/**/edit"}"#, "/a/b/edit", true),
            (r#"{"glob": "/**/edit"}"#, "/edit", true),
            (r#"{"glob": "/**/edit"}"#, "/a/edit/x", false),
            (r#"{"glob": "/a/**/b/**/c"}"#, "/a/x/b/y/b/z/c", true),
            (r#"{"glob": "/a/**/b/**/c"}"#, "/a/x/b/y/z", false),
            (r#"{"glob": "/v*/items"}"#, "/v1/items", true),
            (r#"{"glob": "/*a*b*"}"#, "/xxaxxbxx", true),
            (r#"{"glob": "/*a*b*"}"#, "/xxbxxaxx", false),
            (r#"{"glob": "/"}"#, "/", true),
            (r#"{"glob": "/"}"#, "/a", false),
        ];
        for (path_match, path, expected) in cases {
            let matcher = route(&format!(r#"{{"path": {path_match}}}"#));
            let request = RequestView::build("GET", "h", path, &[]);
            assert_eq!(
                matcher.matches(&request),
                *expected,
                "{path_match} vs {path}"
            );
        }
    }

    #[test]
    fn method_sets() {
        let matcher = route(r#"{"methods": ["get", "HEAD"]}"#);
        for (method, expected) in [
            ("GET", true),
            ("HEAD", true),
            ("POST", false),
            ("get", false),
        ] {
            let request = RequestView::build(method, "h", "/", &[]);
            assert_eq!(matcher.matches(&request), expected, "{method}");
        }
    }

    #[test]
    fn header_conditions() {
        let request = RequestView::build(
            "GET",
            "h",
            "/",
            &[
                ("x-env", "canary-eu"),
                ("x-tag", "a"),
                ("X-Tag", "blue-team"),
            ],
        );
        let cases: &[(&str, bool)] = &[
            (r#"{"name": "x-env", "present": true}"#, true),
            (r#"{"name": "X-ENV", "present": true}"#, true),
            (r#"{"name": "x-none", "present": true}"#, false),
            (r#"{"name": "x-none", "present": false}"#, true),
            (r#"{"name": "x-none", "absent": true}"#, true),
            (r#"{"name": "x-env", "absent": true}"#, false),
            (r#"{"name": "x-env", "exact": "canary-eu"}"#, true),
            (r#"{"name": "x-env", "exact": "Canary-eu"}"#, false),
            (r#"{"name": "x-env", "prefix": "canary"}"#, true),
            (r#"{"name": "x-env", "suffix": "-eu"}"#, true),
            (r#"{"name": "x-env", "suffix": "-us"}"#, false),
            (r#"{"name": "x-env", "contains": "ry-e"}"#, true),
            (r#"{"name": "x-tag", "exact": "blue-team"}"#, true),
            (r#"{"name": "x-tag", "prefix": "blue"}"#, true),
            (r#"{"name": "x-none", "exact": ""}"#, false),
        ];
        for (header, expected) in cases {
            let matcher = route(&format!(r#"{{"headers": [{header}]}}"#));
            assert_eq!(matcher.matches(&request), *expected, "{header}");
        }
    }

    #[test]
    fn conditions_combine_with_and() {
        let matcher = route(
            r#"{"hosts": ["*.example.com"], "path": {"prefix": "/api/"}, "methods": ["POST"],
                "headers": [{"name": "x-env", "exact": "canary"}]}"#,
        );
        let ok = RequestView::build("POST", "a.example.com", "/api/x", &[("x-env", "canary")]);
        assert!(matcher.matches(&ok));
        let variants = [
            RequestView::build("POST", "example.org", "/api/x", &[("x-env", "canary")]),
            RequestView::build("POST", "a.example.com", "/web/x", &[("x-env", "canary")]),
            RequestView::build("GET", "a.example.com", "/api/x", &[("x-env", "canary")]),
            RequestView::build("POST", "a.example.com", "/api/x", &[("x-env", "prod")]),
        ];
        for request in &variants {
            assert!(!matcher.matches(request), "{request:?}");
        }
        assert!(RouteMatch::any().matches(&variants[0]));
    }

    #[test]
    fn bad_patterns_are_config_errors_with_paths() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"hosts": ["ok.com", ""]}"#,
                "hosts[1]: host pattern ``: must not be empty",
            ),
            (
                r#"{"hosts": ["a.*.com"]}"#,
                "hosts[0]: host pattern `a.*.com`: `*` is allowed only once",
            ),
            (
                r#"{"hosts": ["*.a.*"]}"#,
                "hosts[0]: host pattern `*.a.*`: `*` is allowed only once",
            ),
            (
                r#"{"hosts": ["a.com:80"]}"#,
                "hosts[0]: host pattern `a.com:80`: must not include a port",
            ),
            (
                r#"{"hosts": ["a b"]}"#,
                "hosts[0]: host pattern `a b`: only letters",
            ),
            (
                r#"{"path": {"glob": "users/*"}}"#,
                "path.glob: glob `users/*`: must start with `/`",
            ),
            (
                r#"{"path": {"glob": "/a**/b"}}"#,
                "path.glob: glob `/a**/b`: `**` must be a whole path segment",
            ),
            (
                r#"{"path": {"glob": "/a/?"}}"#,
                "path.glob: glob `/a/?`: unsupported character `?`",
            ),
            (
                r#"{"path": {"prefix": "api"}}"#,
                "path.prefix: path `api` must start with `/`",
            ),
            (
                r#"{"methods": ["GET", "G ET"]}"#,
                "methods[1]: `G ET` is not an HTTP method",
            ),
            (
                r#"{"headers": [{"name": "x"}]}"#,
                "headers[0]: exactly one of",
            ),
            (
                r#"{"headers": [{"name": "x", "exact": "a", "prefix": "b"}]}"#,
                "headers[0]: exactly one of",
            ),
            (
                r#"{"headers": [{"name": "x", "present": true, "absent": true}]}"#,
                "headers[0]: exactly one of",
            ),
            (
                r#"{"headers": [{"name": "bad name", "present": true}]}"#,
                "headers[0].name: `bad name` is not a valid header name",
            ),
            (
                r#"{"headers": [{"name": "x", "contains": ""}]}"#,
                "headers[0].contains: must not be empty",
            ),
        ];
        for (json, expected) in cases {
            let message = compile_error(json);
            assert!(message.starts_with(expected), "{json}: {message}");
        }
    }

    #[test]
    fn unknown_match_fields_are_rejected_by_the_json_step() {
        let err = parse_raw::<RawRouteMatch>(br#"{"path": {"regex": "/a.*"}}"#).unwrap_err();
        assert_eq!(err.path(), "path");
        assert!(err.reason().contains("unknown variant `regex`"), "{err}");
        let err = parse_raw::<RawRouteMatch>(br#"{"host": ["a"]}"#).unwrap_err();
        assert_eq!(err.path(), "host");
        for shape in [
            r#"{}"#,
            r#"{"exact": "/a", "prefix": "/b"}"#,
            "true",
            r#"["/a"]"#,
        ] {
            let json = format!(r#"{{"path": {shape}}}"#);
            let err = parse_raw::<RawRouteMatch>(json.as_bytes()).unwrap_err();
            assert_eq!(err.path(), "path", "{json}: {err}");
            assert!(err.reason().starts_with("invalid value"), "{json}: {err}");
        }
        let raw = parse_raw::<RawRouteMatch>(br#"{"hosts": null, "path": null}"#).unwrap();
        assert_eq!(raw, RawRouteMatch::default());
    }

    #[derive(Debug, Deserialize)]
    #[serde(remote = "Self", deny_unknown_fields)]
    struct RawRule {
        #[serde(rename = "match")]
        route: RawRouteMatch,
        backend: String,
    }
    crate::object_only!(RawRule);

    #[test]
    fn first_match_wins_in_order() {
        let raw: Vec<RawRule> = parse_raw(
            br#"[
                {"match": {"path": {"prefix": "/api/"}, "headers": [{"name": "x-canary", "present": true}]}, "backend": "canary"},
                {"match": {"path": {"prefix": "/api/"}}, "backend": "api"},
                {"match": {}, "backend": "default"}
            ]"#,
        )
        .unwrap();
        let rules = FirstMatch::compile("rules", raw, |rule| {
            Ok((
                RouteMatch::compile(&rule.route).map_err(|e| e.within("match"))?,
                rule.backend,
            ))
        })
        .unwrap();
        assert_eq!(rules.len(), 3);
        let pick = |request: RequestView| rules.find_indexed(&request).map(|(i, b)| (i, b.clone()));
        assert_eq!(
            pick(RequestView::build(
                "GET",
                "h",
                "/api/x",
                &[("x-canary", "1")]
            )),
            Some((0, "canary".to_owned()))
        );
        assert_eq!(
            pick(RequestView::build("GET", "h", "/api/x", &[])),
            Some((1, "api".to_owned()))
        );
        assert_eq!(
            pick(RequestView::build("GET", "h", "/", &[])),
            Some((2, "default".to_owned()))
        );
        assert_eq!(
            FirstMatch::<()>::default().find(&RequestView::default()),
            None
        );
    }

    #[test]
    fn first_match_errors_name_the_rule() {
        let raw: Vec<RawRule> = parse_raw(
            br#"[{"match": {}, "backend": "a"}, {"match": {"hosts": ["a.*.b"]}, "backend": "b"}]"#,
        )
        .unwrap();
        let err = FirstMatch::compile("rules", raw, |rule| {
            Ok((
                RouteMatch::compile(&rule.route).map_err(|e| e.within("match"))?,
                rule.backend,
            ))
        })
        .unwrap_err();
        assert_eq!(err.path(), "rules[1].match.hosts[0]");
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Exponential but obviously correct reference: `*` = any run within a segment, `**` as a
        /// whole segment = zero or more segments.
        fn reference(pattern: &[&str], path: &[&str]) -> bool {
            fn segment(p: &[u8], s: &[u8]) -> bool {
                match p.first() {
                    None => s.is_empty(),
                    Some(b'*') => (0..=s.len()).any(|k| segment(&p[1..], &s[k..])),
                    Some(c) => s.first() == Some(c) && segment(&p[1..], &s[1..]),
                }
            }
            match pattern.split_first() {
                None => path.is_empty(),
                Some((&"**", rest)) => (0..=path.len()).any(|k| reference(rest, &path[k..])),
                Some((p, rest)) => path.split_first().is_some_and(|(s, tail)| {
                    segment(p.as_bytes(), s.as_bytes()) && reference(rest, tail)
                }),
            }
        }

        proptest! {
            #[test]
            fn glob_agrees_with_the_reference_matcher(
                pattern in proptest::collection::vec(
                    prop::sample::select(vec!["a", "b", "ab", "*", "**", "a*", "*b", "a*b", "*a*", ""]), 0..5),
                path in proptest::collection::vec(
                    prop::sample::select(vec!["a", "b", "ab", "ba", "aab", ""]), 0..6),
            ) {
                let pattern_text = format!("/{}", pattern.join("/"));
                let path_text = format!("/{}", path.join("/"));
                let glob = PathGlob::compile(&pattern_text).unwrap();
                // "/" splits into one empty segment, as the matcher sees it.
                let pattern_segments: Vec<&str> = pattern_text[1..].split('/').collect();
                let path_segments: Vec<&str> = path_text[1..].split('/').collect();
                prop_assert_eq!(
                    glob.matches(&path_text),
                    reference(&pattern_segments, &path_segments),
                    "{} vs {}", pattern_text, path_text
                );
            }
        }
    }
}
