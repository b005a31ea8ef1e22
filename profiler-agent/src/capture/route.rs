//! A low-cardinality `http.route` from a request target, for span names and RED metric
//! attributes: the zero-code capture sees `/users/12345`, not the framework's `/users/{id}`, so
//! segments that look like identifiers are replaced by `{id}`.
//!
//! Rules, per `/`-separated path segment, in order:
//!
//! 1. all ASCII digits (`12345`) → `{id}`;
//! 2. a UUID, any case (`123e4567-e89b-12d3-a456-426614174000`) → `{id}`;
//! 3. 8+ hex digits, any case, with at least one decimal digit (`9f86d081`, a hash) → `{id}`;
//! 4. 16+ bytes without a `.`, mixing ASCII letters and digits (tokens, base64, slugs with a
//!    number) → `{id}`;
//! 5. 16+ bytes with a `%` or non-ASCII (percent-encoded or raw UTF-8 names) → `{id}`;
//! 6. otherwise, a segment with a `.` (a file name) keeps its shape and has each `.`-separated
//!    part that matches rules 2–5 replaced: `app.3f2a9c1b.js` → `app.{id}.js`,
//!    `jquery-3.6.0.min.js` stays (short parts are not ids; rule 1 does not apply to parts);
//! 7. anything else (`users`, `v1`, `api`, `healthz`, `index.html`) stays.
//!
//! The result has at most [`MAX_SEGMENTS`] segments and [`MAX_ROUTE_BYTES`] bytes: past either
//! cap, the tail is collapsed into one final `{rest}` segment. Every route is a fixed point:
//! `route_of(&route_of(t)) == route_of(t)`.

use std::borrow::Cow;

/// Segments a route keeps at most; a longer path keeps `MAX_SEGMENTS - 1` and ends in `{rest}`.
pub const MAX_SEGMENTS: usize = 16;
/// Bytes a route has at most (the `*` of `OPTIONS *` aside).
pub const MAX_ROUTE_BYTES: usize = 256;

/// The segment that stands for an identifier.
const ID: &str = "{id}";
/// The last segment of a route cut by [`MAX_SEGMENTS`] or [`MAX_ROUTE_BYTES`].
const REST: &str = "{rest}";

/// Returns the path of a request target: `/a?b#c` → `/a`; absolute form `http://host:80/a?b` →
/// `/a` (`/` when it has no path); `*` stays `*`. Any other target (the authority form of
/// `CONNECT`, garbage) → `/`.
pub fn path_of(target: &str) -> &str {
    if target == "*" {
        return "*";
    }
    if target.starts_with('/') {
        return until_query(target);
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return "/";
    };
    let mut scheme_chars = scheme.chars();
    let valid_scheme = scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return "/";
    }
    match rest.find(['/', '?', '#']) {
        Some(start) if rest[start..].starts_with('/') => until_query(&rest[start..]),
        _ => "/",
    }
}

/// Returns the `http.route` of a request target: its [`path_of`] with identifier-like segments
/// replaced by `{id}` (see the module docs). Always `*` or starting with `/`.
pub fn route_of(target: &str) -> String {
    let path = path_of(target);
    if path == "*" {
        return path.to_owned();
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut segments: Vec<Cow<'_, str>> = Vec::new();
    for (index, segment) in path.split('/').enumerate() {
        if index == MAX_SEGMENTS - 1 && path.split('/').nth(MAX_SEGMENTS).is_some() {
            segments.push(Cow::Borrowed(REST));
            break;
        }
        segments.push(normalize_segment(segment));
    }
    let mut route = String::with_capacity(path.len().min(MAX_ROUTE_BYTES) + 1);
    let total: usize = segments.iter().map(|segment| segment.len() + 1).sum();
    if total <= MAX_ROUTE_BYTES {
        for segment in &segments {
            route.push('/');
            route.push_str(segment);
        }
        return route;
    }
    // Keep the longest run of leading segments that leaves room for `/{rest}`.
    for segment in &segments {
        if route.len() + 1 + segment.len() + 1 + REST.len() > MAX_ROUTE_BYTES {
            break;
        }
        route.push('/');
        route.push_str(segment);
    }
    route.push('/');
    route.push_str(REST);
    route
}

/// Cuts a path at its query or fragment.
fn until_query(path: &str) -> &str {
    path.find(['?', '#']).map_or(path, |end| &path[..end])
}

/// Applies rules 1–7 of the module docs to one segment.
fn normalize_segment(segment: &str) -> Cow<'_, str> {
    if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) || is_id(segment) {
        return Cow::Borrowed(ID);
    }
    if !segment.contains('.') || !segment.split('.').any(is_id) {
        return Cow::Borrowed(segment);
    }
    let parts: Vec<&str> = segment
        .split('.')
        .map(|part| if is_id(part) { ID } else { part })
        .collect();
    Cow::Owned(parts.join("."))
}

/// Whether `part` matches rules 2–5 of the module docs.
fn is_id(part: &str) -> bool {
    let bytes = part.as_bytes();
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    let is_uuid = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    let is_hash = bytes.len() >= 8 && has_digit && bytes.iter().all(u8::is_ascii_hexdigit);
    let is_token = bytes.len() >= 16
        && has_digit
        && bytes.iter().any(u8::is_ascii_alphabetic)
        && !bytes.contains(&b'.');
    let is_encoded = bytes.len() >= 16 && bytes.iter().any(|&b| b == b'%' || !b.is_ascii());
    is_uuid || is_hash || is_token || is_encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn path_of_origin_form() {
        assert_eq!(path_of("/a?b#c"), "/a");
        assert_eq!(path_of("/a#c?d"), "/a");
        assert_eq!(path_of("/"), "/");
        assert_eq!(path_of("/?q=1"), "/");
        assert_eq!(path_of("//double/slash"), "//double/slash");
    }

    #[test]
    fn path_of_absolute_form() {
        assert_eq!(path_of("http://host:80/a?b"), "/a");
        assert_eq!(path_of("https://host/a/b#frag"), "/a/b");
        assert_eq!(path_of("http://host"), "/");
        assert_eq!(path_of("http://host?q=/x"), "/");
        assert_eq!(path_of("http://host#/x"), "/");
        assert_eq!(path_of("HTTP://HOST/Path"), "/Path");
        assert_eq!(path_of("1http://host/a"), "/");
    }

    #[test]
    fn path_of_other_forms() {
        assert_eq!(path_of("*"), "*");
        assert_eq!(path_of("example.com:443"), "/");
        assert_eq!(path_of(""), "/");
        assert_eq!(path_of("*/x"), "/");
    }

    #[test]
    fn replaces_identifiers() {
        for (target, route) in [
            (
                "/api/v1/users/12345/orders/9f86d081884c7d659a2feaa0c55ad015",
                "/api/v1/users/{id}/orders/{id}",
            ),
            ("/users/123e4567-e89b-12d3-a456-426614174000", "/users/{id}"),
            (
                "/users/123E4567-E89B-12D3-A456-426614174000/avatar",
                "/users/{id}/avatar",
            ),
            ("/commits/DEADBEEF1", "/commits/{id}"),
            ("/reset/eyJhbGciOiJIUzI1NiJ9", "/reset/{id}"),
            ("/blog/how-to-install-python-3", "/blog/{id}"),
            ("/files/%E2%82%AC%20report", "/files/{id}"),
            (
                "/wiki/\u{65e5}\u{672c}\u{8a9e}\u{306e}\u{8a18}\u{4e8b}\u{3067}\u{3059}",
                "/wiki/{id}",
            ),
            ("http://shop.example/items/42?color=red", "/items/{id}"),
            ("/0", "/{id}"),
        ] {
            assert_eq!(route_of(target), route, "{target}");
        }
    }

    #[test]
    fn keeps_words() {
        for target in [
            "/",
            "/api/v1/users",
            "/healthz",
            "/index.html",
            "/favicon.ico",
            "/static/jquery-3.6.0.min.js",
            // Hex-looking words without a digit, short hex with one.
            "/deadbeef/cafe/abc123",
            "/.well-known/openid-configuration",
            "/users/",
            "/a//b",
            "/%20",
            "/caf\u{e9}",
            "/{id}/{rest}",
        ] {
            assert_eq!(route_of(target), target);
        }
        assert_eq!(route_of("*"), "*");
        assert_eq!(route_of(""), "/");
        assert_eq!(route_of("/search?q=12345"), "/search");
    }

    #[test]
    fn collapses_hashes_inside_file_names() {
        assert_eq!(route_of("/static/app.3f2a9c1b.js"), "/static/app.{id}.js");
        assert_eq!(
            route_of("/static/main.3f2a9c1b8e7d4a5f.chunk.js"),
            "/static/main.{id}.chunk.js"
        );
        assert_eq!(
            route_of("/static/app.1699999999.css"),
            "/static/app.{id}.css"
        );
        assert_eq!(
            route_of("/download/report-2023-final-v2.pdf"),
            "/download/{id}.pdf"
        );
        // A whole-segment id wins over the file-name rule.
        assert_eq!(route_of("/img/9f86d081884c7d65.png"), "/img/{id}.png");
        assert_eq!(route_of("/v/1.2.3"), "/v/1.2.3");
    }

    #[test]
    fn caps_segments() {
        let deep: String = (0..20).map(|i| format!("/s{i}")).collect();
        let route = route_of(&deep);
        let expected: String = (0..MAX_SEGMENTS - 1)
            .map(|i| format!("/s{i}"))
            .collect::<String>()
            + "/{rest}";
        assert_eq!(route, expected);
        let exactly: String = (0..MAX_SEGMENTS).map(|i| format!("/s{i}")).collect();
        assert_eq!(route_of(&exactly), exactly);
    }

    #[test]
    fn caps_bytes() {
        let word = "abcdefghijklmnopqrstuvwxy";
        let long: String = (0..12).map(|_| format!("/{word}")).collect();
        let route = route_of(&long);
        assert!(route.len() <= MAX_ROUTE_BYTES, "{route}");
        assert_eq!(
            route,
            (0..9).map(|_| format!("/{word}")).collect::<String>() + "/{rest}"
        );
        assert_eq!(route_of(&format!("/{}", "a".repeat(300))), "/{rest}");
    }

    proptest! {
        #[test]
        fn routes_are_bounded_and_idempotent(target in any::<String>()) {
            check(&target)?;
        }

        #[test]
        fn path_like_routes_are_bounded_and_idempotent(
            target in "(https?://[a-z.]{1,10}(:[0-9]{1,5})?)?(/[a-zA-Z0-9%._~{}-]{0,40}){0,30}(\\?[a-z=&0-9]{0,10})?",
        ) {
            check(&target)?;
        }
    }

    fn check(target: &str) -> Result<(), TestCaseError> {
        let path = path_of(target);
        prop_assert!(path == "*" || path.starts_with('/'));
        let route = route_of(target);
        prop_assert!(route == "*" || route.starts_with('/'), "{route}");
        prop_assert!(route.len() <= MAX_ROUTE_BYTES, "{route}");
        prop_assert!(route.split('/').count() <= MAX_SEGMENTS + 1, "{route}");
        prop_assert_eq!(route_of(&route), route.clone());
        Ok(())
    }
}
