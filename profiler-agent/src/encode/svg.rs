//! Flame graph SVG rendered by inferno from folded stack lines.
//!
//! Colours use inferno's `perl` palette: it is the semantic palette that marks `_[k]` frames as
//! kernel (orange) while colouring native user code sensibly (C++ and Rust `::` paths yellow,
//! everything else red). The default `hot` palette ignores `_[k]`, and the `java` palette would
//! paint any native name with a `.`, a `/` or a capital first letter as Java (green). Colours are
//! derived from a hash of the function name, so the same function gets the same colour in every
//! graph and the output is reproducible.

use std::io::Write;

use inferno::flamegraph::color::{MultiPalette, Palette};
use inferno::flamegraph::{self, Options};

use super::EncodeError;

/// Width of the placeholder SVG written when there are no samples.
const EMPTY_WIDTH: u32 = 1200;

/// Renders `lines` (as produced by [`super::folded::folded_lines`]) as a flame graph titled
/// `title`.
///
/// inferno refuses input without samples; in that case a small valid SVG saying "no samples" is
/// written instead, so a recording of an idle machine still produces a viewable file.
pub fn write_svg(lines: &[String], title: &str, out: &mut impl Write) -> Result<(), EncodeError> {
    if lines.iter().all(|line| !has_samples(line)) {
        return write_empty_svg(title, out);
    }

    let mut options = Options::default();
    options.title = title.to_owned();
    options.count_name = "samples".to_owned();
    options.colors = Palette::Multi(MultiPalette::Perl);
    options.deterministic = true;

    // Render into memory first so a rendering error never leaves half an SVG in `out`.
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
        .map_err(|source| EncodeError::Svg { source })?;
    out.write_all(&svg)
        .map_err(|source| EncodeError::Write { source })
}

/// Whether a folded line ends in a nonzero sample count.
fn has_samples(line: &str) -> bool {
    line.trim_end()
        .rsplit_once(' ')
        .and_then(|(_, count)| count.parse::<f64>().ok())
        .is_some_and(|count| count > 0.0)
}

/// Writes a flame-graph-sized SVG holding only `title` and "no samples".
fn write_empty_svg(title: &str, out: &mut impl Write) -> Result<(), EncodeError> {
    let title = xml_escape(title);
    let svg = format!(
        r##"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{EMPTY_WIDTH}" height="80" viewBox="0 0 {EMPTY_WIDTH} 80" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="100%" height="100%" fill="#eeeeee"/>
<text x="50%" y="28" text-anchor="middle" font-family="monospace" font-size="17">{title}</text>
<text x="50%" y="58" text-anchor="middle" font-family="monospace" font-size="12">no samples</text>
</svg>
"##
    );
    out.write_all(svg.as_bytes())
        .map_err(|source| EncodeError::Write { source })
}

/// Escapes the characters XML does not allow verbatim in text and attribute values.
fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // Control characters other than tab and newlines are not allowed in XML 1.0.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{folded, test_profile};

    fn render(lines: &[String], title: &str) -> String {
        let mut out = Vec::new();
        write_svg(lines, title, &mut out).expect("render svg");
        String::from_utf8(out).expect("svg is utf-8")
    }

    #[test]
    fn renders_test_profile() {
        let lines = folded::folded_lines(&test_profile::profile());
        let svg = render(&lines, "CPU profile");
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("CPU profile"));
        for name in [
            "app",
            "worker",
            "main",
            "compute",
            "inlined_helper",
            "work_loop",
            "do_syscall_64",
            "entry_SYSCALL_64",
        ] {
            assert!(svg.contains(name), "{name} missing from the svg");
        }
        // inferno strips the kernel annotation from labels.
        assert!(!svg.contains("_[k]"));
        assert!(svg.contains("samples"));
    }

    #[test]
    fn output_is_reproducible() {
        let lines = folded::folded_lines(&test_profile::profile());
        assert_eq!(render(&lines, "t"), render(&lines, "t"));
    }

    #[test]
    fn kernel_frames_are_coloured_differently() {
        let lines = vec![
            "app;main 1".to_owned(),
            "app;main;do_sys_open_[k] 1".to_owned(),
        ];
        let svg = render(&lines, "t");
        let fill_of = |name: &str| {
            let at = svg
                .find(&format!("<title>{name} ("))
                .unwrap_or_else(|| panic!("no frame {name} in {svg}"));
            let fill = svg[at..].find("fill=\"").expect("frame has a fill") + at + 6;
            let end = svg[fill..].find('"').expect("fill ends") + fill;
            svg[fill..end].to_owned()
        };
        // The perl palette paints kernel frames orange: rgb(190..255, 90..155, 0).
        let kernel = fill_of("do_sys_open");
        assert!(kernel.ends_with(",0)"), "kernel frame fill {kernel}");
        assert_ne!(fill_of("main"), kernel);
    }

    #[test]
    fn empty_input_gives_valid_placeholder() {
        for lines in [Vec::new(), vec!["app;main 0".to_owned()]] {
            let svg = render(&lines, "cpu <pid 1> & co");
            assert!(svg.starts_with("<?xml"));
            assert!(svg.contains("<svg"));
            assert!(svg.contains("no samples"));
            assert!(svg.contains("cpu &lt;pid 1&gt; &amp; co"));
            assert!(svg.trim_end().ends_with("</svg>"));
        }
    }
}
