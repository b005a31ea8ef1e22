//! Pure encoders from a symbolized [`Profile`] to the formats the agent writes.
//!
//! - [`pprof`]: gzip-compressed `profile.proto` for `go tool pprof`, Pyroscope, Parca and the
//!   server's ingest (which also reuses [`pprof::decode`]).
//! - [`folded`]: Brendan Gregg's collapsed stacks, one `frame;frame;... count` line per stack.
//! - [`svg`]: an interactive flame graph rendered by inferno from the folded lines.
//!
//! Start with [`write_profile`], which picks the encoder from an [`OutputFormat`]. Nothing in this
//! module does IO of its own: encoders return bytes or write to a caller-provided `Write`.

mod error;
pub mod folded;
pub mod pprof;
pub mod spans_json;
pub mod svg;

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

pub use error::{EncodeError, ParseFormatError};

use crate::profile::Profile;

/// An output file format of the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// Gzip-compressed pprof protobuf.
    Pprof,
    /// Folded (collapsed) stacks, one line per stack.
    Folded,
    /// Flame graph SVG.
    Svg,
}

impl OutputFormat {
    /// All formats, in the order they are listed in help texts.
    pub const ALL: [OutputFormat; 3] =
        [OutputFormat::Pprof, OutputFormat::Folded, OutputFormat::Svg];

    /// Guesses the format from a file name's extension: `.pb.gz`, `.pb` and `.pprof` are pprof,
    /// `.folded` and `.txt` are folded stacks, `.svg` is a flame graph (case-insensitive).
    pub fn from_path(path: &Path) -> Option<OutputFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        const SUFFIXES: [(&str, OutputFormat); 6] = [
            (".pb.gz", OutputFormat::Pprof),
            (".pb", OutputFormat::Pprof),
            (".pprof", OutputFormat::Pprof),
            (".folded", OutputFormat::Folded),
            (".txt", OutputFormat::Folded),
            (".svg", OutputFormat::Svg),
        ];
        SUFFIXES
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix))
            .map(|&(_, format)| format)
    }

    /// The name accepted by [`FromStr`] and printed by [`fmt::Display`].
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Pprof => "pprof",
            OutputFormat::Folded => "folded",
            OutputFormat::Svg => "svg",
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `pprof`, `folded` or `svg` (case-insensitive), so clap can use it as a value parser.
impl FromStr for OutputFormat {
    type Err = ParseFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OutputFormat::ALL
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseFormatError { name: s.to_owned() })
    }
}

/// Encodes `profile` in `format` and writes it to `out`.
///
/// pprof is always gzip-compressed, as `profile.proto` requires on disk (pprof tools read both).
/// `title` is used by the SVG flame graph only.
pub fn write_profile(
    profile: &Profile,
    format: OutputFormat,
    title: &str,
    out: &mut impl Write,
) -> Result<(), EncodeError> {
    match format {
        OutputFormat::Pprof => {
            let bytes = pprof::encode_gzip(profile)?;
            out.write_all(&bytes)
                .map_err(|source| EncodeError::Write { source })?;
        }
        OutputFormat::Folded => {
            for line in folded::folded_lines(profile) {
                writeln!(out, "{line}").map_err(|source| EncodeError::Write { source })?;
            }
        }
        OutputFormat::Svg => svg::write_svg(&folded::folded_lines(profile), title, out)?,
    }
    out.flush().map_err(|source| EncodeError::Write { source })
}

#[cfg(test)]
pub(crate) mod test_profile {
    //! A small hand-built profile shared by the encoder tests.

    use crate::profile::{Line, Location, Mapping, Profile, Sample};

    /// Two processes (`app` with three threads, `worker` with two), two kernel frames, an inlined
    /// function, a mapping with a build id, a mapping without symbols and a location without a
    /// mapping.
    pub(crate) fn profile() -> Profile {
        let line = |function: &str, file: Option<&str>, line: u32| Line {
            function: function.to_owned(),
            file: file.map(str::to_owned),
            line,
        };
        Profile {
            mappings: vec![
                Mapping {
                    start: 0x40_0000,
                    limit: 0x50_0000,
                    file_offset: 0,
                    filename: "/usr/bin/app".to_owned(),
                    build_id: Some("abcdef0123456789".to_owned()),
                },
                Mapping {
                    start: 0xffff_ffff_8100_0000,
                    limit: 0xffff_ffff_8200_0000,
                    file_offset: 0,
                    filename: "[kernel.kallsyms]".to_owned(),
                    build_id: None,
                },
                Mapping {
                    start: 0x7f00_0000_0000,
                    limit: 0x7f00_0001_0000,
                    file_offset: 0x1000,
                    filename: "/usr/lib/libwork.so".to_owned(),
                    build_id: None,
                },
                Mapping {
                    start: 0x7f00_1000_0000,
                    limit: 0x7f00_1001_0000,
                    file_offset: 0,
                    filename: "/usr/lib/libstripped.so".to_owned(),
                    build_id: None,
                },
            ],
            locations: vec![
                // 0: kernel leaf.
                Location {
                    address: 0xffff_ffff_8100_0010,
                    mapping: Some(1),
                    lines: vec![line("do_syscall_64", None, 0)],
                    kernel: true,
                },
                // 1: kernel entry.
                Location {
                    address: 0xffff_ffff_8100_0100,
                    mapping: Some(1),
                    lines: vec![line("entry_SYSCALL_64", None, 0)],
                    kernel: true,
                },
                // 2: `inlined_helper` inlined into `compute`.
                Location {
                    address: 0x40_1000,
                    mapping: Some(0),
                    lines: vec![
                        line("inlined_helper", Some("src/app.c"), 10),
                        line("compute", Some("src/app.c"), 42),
                    ],
                    kernel: false,
                },
                // 3: `main`.
                Location {
                    address: 0x40_2000,
                    mapping: Some(0),
                    lines: vec![line("main", Some("src/app.c"), 100)],
                    kernel: false,
                },
                // 4: unresolved address in a stripped library.
                Location {
                    address: 0x7f00_1000_0040,
                    mapping: Some(3),
                    lines: vec![line("[unknown]", None, 0)],
                    kernel: false,
                },
                // 5: `work_loop`, symbolized without debug info.
                Location {
                    address: 0x7f00_0000_0100,
                    mapping: Some(2),
                    lines: vec![line("work_loop", None, 0)],
                    kernel: false,
                },
                // 6: JIT code outside any mapping.
                Location {
                    address: 0xdead_0000,
                    mapping: None,
                    lines: vec![line("jit_stub", None, 0)],
                    kernel: false,
                },
            ],
            samples: vec![
                Sample {
                    pid: 100,
                    tid: 100,
                    comm: "app".to_owned(),
                    stack: vec![0, 1, 2, 3],
                    count: 3,
                    labels: Vec::new(),
                },
                Sample {
                    pid: 100,
                    tid: 101,
                    comm: "app".to_owned(),
                    stack: vec![2, 3],
                    count: 2,
                    labels: Vec::new(),
                },
                Sample {
                    pid: 100,
                    tid: 102,
                    comm: "app".to_owned(),
                    stack: vec![2, 3],
                    count: 1,
                    labels: Vec::new(),
                },
                Sample {
                    pid: 200,
                    tid: 200,
                    comm: "worker".to_owned(),
                    stack: vec![4, 5],
                    count: 5,
                    labels: Vec::new(),
                },
                Sample {
                    pid: 200,
                    tid: 201,
                    comm: "worker".to_owned(),
                    stack: vec![],
                    count: 1,
                    labels: Vec::new(),
                },
                Sample {
                    pid: 200,
                    tid: 200,
                    comm: "worker".to_owned(),
                    stack: vec![6, 5],
                    count: 1,
                    labels: Vec::new(),
                },
            ],
            start_unix_ns: 1_700_000_000_000_000_000,
            duration_ns: 10_000_000_000,
            period_ns: 10_101_010,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_path() {
        let cases = [
            ("out.pb.gz", Some(OutputFormat::Pprof)),
            ("/tmp/cpu.pb", Some(OutputFormat::Pprof)),
            ("cpu.PPROF", Some(OutputFormat::Pprof)),
            ("stacks.folded", Some(OutputFormat::Folded)),
            ("stacks.txt", Some(OutputFormat::Folded)),
            ("flame.svg", Some(OutputFormat::Svg)),
            ("flame.png", None),
            ("profile", None),
            (".svg", None),
        ];
        for (path, expected) in cases {
            assert_eq!(OutputFormat::from_path(Path::new(path)), expected, "{path}");
        }
    }

    #[test]
    fn format_from_str() {
        for format in OutputFormat::ALL {
            assert_eq!(format.to_string().parse::<OutputFormat>(), Ok(format));
        }
        assert_eq!("SVG".parse::<OutputFormat>(), Ok(OutputFormat::Svg));
        let err = "png".parse::<OutputFormat>().expect_err("png is no format");
        assert_eq!(
            err.to_string(),
            "unknown output format `png` (expected pprof, folded or svg)"
        );
    }

    #[test]
    fn write_profile_all_formats() {
        let profile = test_profile::profile();

        let mut pprof_out = Vec::new();
        write_profile(&profile, OutputFormat::Pprof, "t", &mut pprof_out).expect("pprof");
        assert_eq!(pprof_out[..2], [0x1f, 0x8b]);
        let decoded = pprof::decode(&pprof_out).expect("decode written pprof");
        assert_eq!(decoded.sample.len(), profile.samples.len());

        let mut folded_out = Vec::new();
        write_profile(&profile, OutputFormat::Folded, "t", &mut folded_out).expect("folded");
        let text = String::from_utf8(folded_out).expect("folded output is utf-8");
        let expected: String = folded::folded_lines(&profile)
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(text, expected);

        let mut svg_out = Vec::new();
        write_profile(&profile, OutputFormat::Svg, "cpu of app", &mut svg_out).expect("svg");
        let svg = String::from_utf8(svg_out).expect("svg output is utf-8");
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("cpu of app"));
    }
}
