//! Pyroscope's `/ingest` request format: the `name=app{label=value,...}` parameter and the
//! `multipart/form-data` body whose `profile` field holds the pprof (what Pyroscope's Go and
//! eBPF clients send).

use crate::model::{Labels, SERVICE_LABEL};

/// Why a Pyroscope request was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PyroscopeError {
    /// The `name` parameter is malformed.
    #[error("invalid `name` {name:?}: {reason} (expected `app{{label=value,...}}`)")]
    Name {
        /// The parameter.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The multipart body is malformed or has no `profile` field.
    #[error("invalid multipart body: {reason}")]
    Multipart {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Parses `app.cpu{env=prod,region=eu}` into sorted labels with `service_name=app.cpu`.
/// Pyroscope's clients append the profile type (`.cpu`, `.itimer`, `.wall`) to the app name;
/// it is stripped, as Pyroscope does.
pub fn parse_name(name: &str) -> Result<Labels, PyroscopeError> {
    let error = |reason| PyroscopeError::Name {
        name: name.to_owned(),
        reason,
    };
    let (app, rest) = match name.find('{') {
        Some(open) => (&name[..open], Some(&name[open + 1..])),
        None => (name, None),
    };
    let app = app.trim();
    if app.is_empty() {
        return Err(error("empty application name"));
    }
    let app = [".cpu", ".itimer", ".wall"]
        .iter()
        .find_map(|suffix| app.strip_suffix(suffix))
        .unwrap_or(app);
    let mut labels = vec![(SERVICE_LABEL.to_owned(), app.to_owned())];
    if let Some(rest) = rest {
        let body = rest.strip_suffix('}').ok_or_else(|| error("missing `}`"))?;
        for pair in body.split(',') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| error("label without `=`"))?;
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || key.contains(['{', '}']) || value.contains(['{', '}']) {
                return Err(error("malformed label"));
            }
            if key == SERVICE_LABEL || key == "__name__" {
                continue;
            }
            labels.push((key.to_owned(), value.to_owned()));
        }
    }
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    Ok(labels)
}

/// The `boundary` parameter of a `multipart/form-data` content type, if it is one.
pub fn multipart_boundary(content_type: &str) -> Option<&str> {
    let mut parts = content_type.split(';');
    let mime = parts.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts.find_map(|p| {
        let (key, value) = p.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// The contents of the form field named `field` of a multipart body.
pub fn multipart_field<'a>(
    body: &'a [u8],
    boundary: &str,
    field: &str,
) -> Result<&'a [u8], PyroscopeError> {
    if boundary.is_empty() || boundary.len() > 200 {
        return Err(PyroscopeError::Multipart {
            reason: "bad boundary",
        });
    }
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut rest = match find(body, delimiter) {
        Some(start) => &body[start + delimiter.len()..],
        None => {
            return Err(PyroscopeError::Multipart {
                reason: "boundary not found",
            })
        }
    };
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        // Each part: CRLF, headers, CRLF CRLF, content, CRLF, delimiter.
        let headers_end = find(rest, b"\r\n\r\n").ok_or(PyroscopeError::Multipart {
            reason: "part without headers",
        })?;
        let headers = String::from_utf8_lossy(&rest[..headers_end]);
        let content_start = headers_end + 4;
        let content_len =
            find(&rest[content_start..], delimiter).ok_or(PyroscopeError::Multipart {
                reason: "unterminated part",
            })?;
        let content = &rest[content_start..content_start + content_len];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        if part_name(&headers).as_deref() == Some(field) {
            return Ok(content);
        }
        rest = &rest[content_start + content_len + delimiter.len()..];
    }
    Err(PyroscopeError::Multipart {
        reason: "no `profile` field",
    })
}

/// The `name` of a part's `Content-Disposition: form-data; name="..."` header.
fn part_name(headers: &str) -> Option<String> {
    headers.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if !key.trim().eq_ignore_ascii_case("content-disposition") {
            return None;
        }
        value.split(';').find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_owned())
        })
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(labels: &Labels) -> Vec<(&str, &str)> {
        labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn names_with_labels() {
        let labels = parse_name("api.cpu{env=prod, region = eu,}").expect("valid");
        assert_eq!(
            pairs(&labels),
            [("env", "prod"), ("region", "eu"), ("service_name", "api")]
        );
        assert_eq!(
            pairs(&parse_name("api").expect("valid")),
            [("service_name", "api")]
        );
        assert_eq!(
            pairs(&parse_name("my.app{service_name=evil}").expect("valid")),
            [("service_name", "my.app")]
        );
        for bad in ["", "{a=b}", "api{a=b", "api{a}", "api{=b}"] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn multipart_profile_field() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n\x1f\x8b\r\n--\x00\r\n--XyZ--\r\n";
        let boundary = multipart_boundary("multipart/form-data; boundary=XyZ").expect("multipart");
        assert_eq!(boundary, "XyZ");
        let field = multipart_field(body, boundary, "profile").expect("has profile");
        assert_eq!(field, b"\x1f\x8b\r\n--\x00");
        assert!(multipart_field(body, boundary, "missing").is_err());
        assert!(multipart_field(b"garbage", boundary, "profile").is_err());
        assert!(multipart_field(b"--XyZ\r\nno end", boundary, "profile").is_err());
        assert_eq!(multipart_boundary("application/octet-stream"), None);
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=\"q\""),
            Some("q")
        );
    }
}
