//! Label selectors in Prometheus/Pyroscope form: `{service_name="api",comm!="sh",pid=~"1.*"}`.
//!
//! Operators `=`, `!=`, `=~`, `!~`; regexes are anchored (RE2 syntax via `regex-lite`). As in
//! Prometheus, a missing label has the empty value: `{a!="x"}` selects series without `a`, and
//! `{a=""}` selects exactly those.

use regex_lite::Regex;

use super::QueryError;

/// A parsed selector: every matcher must hold. Empty selects everything.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    matchers: Vec<Matcher>,
}

/// One `name op "value"` condition.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// The value or regex as written.
    pub value: String,
    regex: Option<Regex>,
}

/// A matcher's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl Matcher {
    /// Whether a label value (empty when the label is missing) satisfies this matcher.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

impl Selector {
    /// Parses a selector; empty input and `{}` select everything.
    pub fn parse(input: &str) -> Result<Self, QueryError> {
        Parser { input, pos: 0 }.selector()
    }

    /// The matchers, in the order written.
    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }

    /// Whether the selector has no matchers.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// Whether a label set (sorted by name) satisfies every matcher.
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        self.matchers.iter().all(|m| {
            let value = labels
                .binary_search_by(|(name, _)| name.as_str().cmp(&m.name))
                .map_or("", |i| labels[i].1.as_str());
            m.matches(value)
        })
    }

    /// Removes and returns the value of an `name="value"` matcher, if there is one; lets the
    /// store answer labels it keeps apart from series (`trace_id`, `span_id`) with an index.
    pub fn take_equal(&mut self, name: &str) -> Option<String> {
        let index = self
            .matchers
            .iter()
            .position(|m| m.name == name && m.op == MatchOp::Equal)?;
        Some(self.matchers.remove(index).value)
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &str) -> QueryError {
        QueryError::Selector {
            input: self.input.to_owned(),
            offset: self.pos,
            reason: reason.to_owned(),
        }
    }

    fn rest(&self) -> &str {
        &self.input[self.pos..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn selector(mut self) -> Result<Selector, QueryError> {
        let mut matchers = Vec::new();
        self.skip_space();
        if self.rest().is_empty() {
            return Ok(Selector { matchers });
        }
        if !self.eat("{") {
            return Err(self.error("expected `{`"));
        }
        loop {
            if self.eat("}") {
                break;
            }
            matchers.push(self.matcher()?);
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                break;
            }
            return Err(self.error("expected `,` or `}`"));
        }
        self.skip_space();
        if !self.rest().is_empty() {
            return Err(self.error("unexpected input after `}`"));
        }
        Ok(Selector { matchers })
    }

    fn matcher(&mut self) -> Result<Matcher, QueryError> {
        let name = self.name()?;
        let op = if self.eat("=~") {
            MatchOp::Regex
        } else if self.eat("!~") {
            MatchOp::NotRegex
        } else if self.eat("!=") {
            MatchOp::NotEqual
        } else if self.eat("=") {
            MatchOp::Equal
        } else {
            return Err(self.error("expected `=`, `!=`, `=~` or `!~`"));
        };
        let value_pos = {
            self.skip_space();
            self.pos
        };
        let value = self.string()?;
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                let anchored = format!("^(?:{value})$");
                Some(Regex::new(&anchored).map_err(|e| {
                    self.pos = value_pos;
                    self.error(&format!("invalid regex: {e}"))
                })?)
            }
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    fn name(&mut self) -> Result<String, QueryError> {
        self.skip_space();
        let input = self.input;
        let rest = &input[self.pos..];
        let len = rest
            .char_indices()
            .find(|&(i, c)| {
                !(c == '_'
                    || c.is_ascii_alphabetic()
                    || (i > 0 && (c.is_ascii_digit() || c == '.')))
            })
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 {
            return Err(self.error("expected a label name"));
        }
        self.pos += len;
        Ok(rest[..len].to_owned())
    }

    fn string(&mut self) -> Result<String, QueryError> {
        let Some(quote) = self
            .rest()
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\'' | '`'))
        else {
            return Err(self.error("expected a quoted value"));
        };
        self.pos += 1;
        let mut value = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos += i + 1;
                return Ok(value);
            }
            if c == '\\' && quote != '`' {
                let Some((_, escaped)) = chars.next() else {
                    break;
                };
                value.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
            } else {
                value.push(c);
            }
        }
        self.pos = self.input.len();
        Err(self.error("unterminated string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut labels: Vec<_> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        labels
    }

    fn sel(input: &str) -> Selector {
        Selector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn empty_selects_everything() {
        let l = labels(&[("service_name", "api")]);
        assert!(sel("").matches(&l));
        assert!(sel("  {  } ").matches(&l));
        assert!(sel("{}").is_empty());
    }

    #[test]
    fn operators_follow_prometheus() {
        let l = labels(&[("service_name", "api"), ("comm", "nginx"), ("pid", "1234")]);
        assert!(sel(r#"{service_name="api"}"#).matches(&l));
        assert!(!sel(r#"{service_name="ap"}"#).matches(&l));
        assert!(sel(r#"{service_name="api",comm!="sh"}"#).matches(&l));
        assert!(!sel(r#"{service_name="api",comm!="nginx"}"#).matches(&l));
        assert!(sel(r#"{pid=~"12.*"}"#).matches(&l));
        assert!(!sel(r#"{pid=~"2.*"}"#).matches(&l), "regexes are anchored");
        assert!(!sel(r#"{pid=~"23"}"#).matches(&l), "regexes are anchored");
        assert!(sel(r#"{comm!~"ng.*|sh"}"#).matches(&labels(&[("comm", "bash")])));
        assert!(!sel(r#"{comm!~"ng.*|sh"}"#).matches(&l));
        // Missing labels are empty.
        assert!(sel(r#"{tid!="7"}"#).matches(&l));
        assert!(sel(r#"{tid=""}"#).matches(&l));
        assert!(!sel(r#"{tid="7"}"#).matches(&l));
        assert!(sel(r#"{tid=~".*"}"#).matches(&l));
    }

    #[test]
    fn syntax_variants() {
        let l = labels(&[("a", "x\"y"), ("b.c", "1")]);
        assert!(sel(r#"{ a = "x\"y" , b.c = '1' , }"#).matches(&l));
        assert!(sel(r#"{a=`x"y`}"#).matches(&l));
        let s = sel(r#"{a="1",b!="2",c=~"3",d!~"4"}"#);
        let ops: Vec<_> = s.matchers().iter().map(|m| m.op).collect();
        assert_eq!(
            ops,
            [
                MatchOp::Equal,
                MatchOp::NotEqual,
                MatchOp::Regex,
                MatchOp::NotRegex
            ]
        );
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in [
            "service_name=\"api\"",
            "{service_name}",
            "{service_name=api}",
            "{service_name=\"api\"",
            "{service_name=\"api}",
            "{=\"x\"}",
            "{1a=\"x\"}",
            "{a=\"x\"} junk",
            "{a=\"x\" b=\"y\"}",
            "{a=~\"(\"}",
            "{a==\"x\"}",
            "{a=\"x\\",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn take_equal_removes_the_matcher() {
        let mut s = sel(r#"{service_name="api",trace_id="abc"}"#);
        assert_eq!(s.take_equal("trace_id").as_deref(), Some("abc"));
        assert_eq!(s.take_equal("trace_id"), None);
        assert_eq!(s.matchers().len(), 1);
    }
}
