//! pprof encoder and decoder: [`Profile`] to `profile.proto` and back.
//!
//! [`encode`] and [`encode_gzip`] write one pprof Mapping per profile mapping and one Location per
//! profile location (ids are index + 1), one Sample per profile sample with the values
//! `[count, count * period_ns]` typed `samples/count` and `cpu/nanoseconds`, and the string
//! labels `pid`, `tid` and `comm`. A sample without frames gets a synthetic `[no stack]`
//! location, as in the folded output, because pprof tools silently drop samples without
//! locations. [`PprofBuilder`] owns the deduplicated string and function tables.
//!
//! The messages and the decoder live in `profiler-pprof`, shared with the server's ingest.

pub use profiler_pprof::{decode, proto, DecodeError};

use std::collections::HashMap;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use super::EncodeError;
use crate::profile::{Profile, UNKNOWN_FUNCTION};

/// Function of the synthetic location given to samples without frames (as in `folded`).
const NO_STACK_FUNCTION: &str = "[no stack]";

/// Encodes `profile` as an uncompressed pprof protobuf.
pub fn encode(profile: &Profile) -> Vec<u8> {
    to_proto(profile).encode_to_vec()
}

/// Encodes `profile` as a gzip-compressed pprof protobuf, the form pprof tools expect on disk.
pub fn encode_gzip(profile: &Profile) -> Result<Vec<u8>, EncodeError> {
    let raw = encode(profile);
    let mut encoder = GzEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::default());
    encoder
        .write_all(&raw)
        .map_err(|source| EncodeError::Compress { source })?;
    encoder
        .finish()
        .map_err(|source| EncodeError::Compress { source })
}

/// Converts `profile` to pprof messages.
pub fn to_proto(profile: &Profile) -> proto::Profile {
    PprofBuilder::new().build(profile)
}

/// Builds a [`proto::Profile`] from a [`Profile`], deduplicating strings and functions.
#[derive(Debug)]
pub struct PprofBuilder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<proto::Function>,
    /// `(name, filename)` string ids to function id.
    function_ids: HashMap<(i64, i64), u64>,
}

impl Default for PprofBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PprofBuilder {
    /// Creates a builder whose string table holds only `""` at index 0.
    pub fn new() -> Self {
        let mut builder = PprofBuilder {
            strings: Vec::new(),
            string_ids: HashMap::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
        };
        builder.string("");
        builder
    }

    /// Returns the string table index of `s`, adding it if it is new.
    pub fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        // A Vec never holds more than isize::MAX elements, so its length fits in i64.
        let id = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    /// Returns the id of the function `name` in `file`, adding it if it is new.
    pub fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let name = self.string(name);
        let filename = file.map_or(0, |file| self.string(file));
        if let Some(&id) = self.function_ids.get(&(name, filename)) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(proto::Function {
            id,
            name,
            // Only the demangled name is known; pprof's own Go encoder also repeats it here.
            system_name: name,
            filename,
            start_line: 0,
        });
        self.function_ids.insert((name, filename), id);
        id
    }

    /// Converts `profile`, consuming the builder's tables.
    ///
    /// Location and mapping indexes that are out of range (a bug in whoever built `profile`) are
    /// dropped rather than written as dangling ids that pprof tools reject. Samples left without
    /// frames point at one extra location, after the profile's own, whose only line is the
    /// function `[no stack]`: pprof drops samples without locations from every report, which
    /// would make its totals disagree with the folded stacks and flame graph.
    pub fn build(mut self, profile: &Profile) -> proto::Profile {
        let samples = self.string("samples");
        let count = self.string("count");
        let cpu = self.string("cpu");
        let nanoseconds = self.string("nanoseconds");
        let pid_key = self.string("pid");
        let tid_key = self.string("tid");
        let comm_key = self.string("comm");

        // A mapping counts as symbolized when at least one of its addresses resolved to a
        // function: the symbolizer then also looked for files, lines and inlined frames, and the
        // has_* flags tell pprof not to symbolize it again.
        let mut symbolized = vec![false; profile.mappings.len()];
        for location in &profile.locations {
            let resolved = location
                .lines
                .iter()
                .any(|line| !line.function.starts_with(UNKNOWN_FUNCTION));
            if let Some(flag) = location.mapping.and_then(|m| symbolized.get_mut(m)) {
                *flag |= resolved;
            }
        }

        let mapping = profile
            .mappings
            .iter()
            .zip(&symbolized)
            .enumerate()
            .map(|(index, (mapping, &symbolized))| proto::Mapping {
                id: index as u64 + 1,
                memory_start: mapping.start,
                memory_limit: mapping.limit,
                file_offset: mapping.file_offset,
                filename: self.string(&mapping.filename),
                build_id: mapping
                    .build_id
                    .as_deref()
                    .map_or(0, |build_id| self.string(build_id)),
                has_functions: symbolized,
                has_filenames: symbolized,
                has_line_numbers: symbolized,
                has_inline_frames: symbolized,
            })
            .collect();

        let mapping_count = profile.mappings.len();
        let mut location: Vec<proto::Location> = profile
            .locations
            .iter()
            .enumerate()
            .map(|(index, location)| proto::Location {
                id: index as u64 + 1,
                mapping_id: location
                    .mapping
                    .filter(|&m| m < mapping_count)
                    .map_or(0, |m| m as u64 + 1),
                address: location.address,
                line: location
                    .lines
                    .iter()
                    .map(|line| proto::Line {
                        function_id: self.function(&line.function, line.file.as_deref()),
                        line: i64::from(line.line),
                        column: 0,
                    })
                    .collect(),
                is_folded: false,
            })
            .collect();

        let location_count = profile.locations.len();
        let mut no_stack_location = None;
        let period_ns = saturating_i64(profile.period_ns);
        let sample = profile
            .samples
            .iter()
            .map(|sample| {
                let count = saturating_i64(sample.count);
                let pid = self.string(&sample.pid.to_string());
                let tid = self.string(&sample.tid.to_string());
                let comm = self.string(&sample.comm);
                let mut location_id: Vec<u64> = sample
                    .stack
                    .iter()
                    .filter(|&&l| l < location_count)
                    .map(|&l| l as u64 + 1)
                    .collect();
                if location_id.is_empty() {
                    let id = *no_stack_location.get_or_insert_with(|| {
                        let id = location.len() as u64 + 1;
                        location.push(proto::Location {
                            id,
                            mapping_id: 0,
                            address: 0,
                            line: vec![proto::Line {
                                function_id: self.function(NO_STACK_FUNCTION, None),
                                line: 0,
                                column: 0,
                            }],
                            is_folded: false,
                        });
                        id
                    });
                    location_id.push(id);
                }
                let mut label = vec![
                    string_label(pid_key, pid),
                    string_label(tid_key, tid),
                    string_label(comm_key, comm),
                ];
                for (key, value) in &sample.labels {
                    label.push(string_label(self.string(key), self.string(value)));
                }
                proto::Sample {
                    location_id,
                    value: vec![count, count.saturating_mul(period_ns)],
                    label,
                }
            })
            .collect();

        let cpu_nanoseconds = proto::ValueType {
            r#type: cpu,
            unit: nanoseconds,
        };
        proto::Profile {
            sample_type: vec![
                proto::ValueType {
                    r#type: samples,
                    unit: count,
                },
                cpu_nanoseconds.clone(),
            ],
            sample,
            mapping,
            location,
            function: self.functions,
            string_table: self.strings,
            drop_frames: 0,
            keep_frames: 0,
            time_nanos: saturating_i64(profile.start_unix_ns),
            duration_nanos: saturating_i64(profile.duration_ns),
            period_type: Some(cpu_nanoseconds),
            period: period_ns,
            comment: Vec::new(),
            // 0 (unset) means the last sample type, cpu/nanoseconds.
            default_sample_type: 0,
        }
    }
}

fn string_label(key: i64, value: i64) -> proto::Label {
    proto::Label {
        key,
        str: value,
        num: 0,
        num_unit: 0,
    }
}

/// Converts to pprof's signed fields; values past i64::MAX (year 2262 in ns) saturate.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::test_profile;
    use profiler_pprof::{decode_with_limit, GZIP_MAGIC};

    fn string(profile: &proto::Profile, index: i64) -> &str {
        let index = usize::try_from(index).expect("string index is not negative");
        profile
            .string_table
            .get(index)
            .unwrap_or_else(|| panic!("string index {index} out of range"))
    }

    fn value_type(profile: &proto::Profile, value_type: &proto::ValueType) -> (String, String) {
        (
            string(profile, value_type.r#type).to_owned(),
            string(profile, value_type.unit).to_owned(),
        )
    }

    fn label(profile: &proto::Profile, sample: &proto::Sample, key: &str) -> String {
        let labels: Vec<_> = sample
            .label
            .iter()
            .filter(|label| string(profile, label.key) == key)
            .collect();
        assert_eq!(labels.len(), 1, "exactly one {key} label: {sample:?}");
        assert_eq!(labels[0].num, 0, "{key} is a string label");
        string(profile, labels[0].str).to_owned()
    }

    fn function_of<'a>(profile: &'a proto::Profile, line: &proto::Line) -> &'a proto::Function {
        profile
            .function
            .iter()
            .find(|function| function.id == line.function_id)
            .unwrap_or_else(|| panic!("no function with id {}", line.function_id))
    }

    #[test]
    fn round_trip() {
        let input = test_profile::profile();
        let decoded = decode(&encode(&input)).expect("decode encoded profile");

        // String table: "" first, no duplicates.
        assert_eq!(decoded.string_table[0], "");
        let mut unique = decoded.string_table.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            decoded.string_table.len(),
            "strings are deduplicated"
        );

        let sample_types: Vec<_> = decoded
            .sample_type
            .iter()
            .map(|vt| value_type(&decoded, vt))
            .collect();
        assert_eq!(
            sample_types,
            [
                ("samples".to_owned(), "count".to_owned()),
                ("cpu".to_owned(), "nanoseconds".to_owned())
            ]
        );
        let period_type = decoded.period_type.as_ref().expect("period_type is set");
        assert_eq!(
            value_type(&decoded, period_type),
            ("cpu".to_owned(), "nanoseconds".to_owned())
        );
        assert_eq!(decoded.period, 10_101_010);
        assert_eq!(decoded.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(decoded.duration_nanos, 10_000_000_000);

        // Samples: one per input sample, stacks leaf first, values and labels.
        assert_eq!(decoded.sample.len(), input.samples.len());
        for (sample, expected) in decoded.sample.iter().zip(&input.samples) {
            let mut stack: Vec<u64> = expected.stack.iter().map(|&l| l as u64 + 1).collect();
            if stack.is_empty() {
                // The synthetic `[no stack]` location follows the profile's own.
                stack.push(input.locations.len() as u64 + 1);
            }
            assert_eq!(sample.location_id, stack);
            let count = expected.count as i64;
            assert_eq!(sample.value, [count, count * 10_101_010]);
            assert_eq!(label(&decoded, sample, "pid"), expected.pid.to_string());
            assert_eq!(label(&decoded, sample, "tid"), expected.tid.to_string());
            assert_eq!(label(&decoded, sample, "comm"), expected.comm);
            assert_eq!(sample.label.len(), 3);
        }

        // Locations: id = index + 1, lines innermost first, through functions to names.
        assert_eq!(decoded.location.len(), input.locations.len() + 1);
        for (index, location) in decoded.location.iter().enumerate() {
            assert_eq!(location.id, index as u64 + 1);
        }
        for (location, expected) in decoded.location.iter().zip(&input.locations) {
            assert_eq!(location.address, expected.address);
        }
        let no_stack = &decoded.location[input.locations.len()];
        assert_eq!((no_stack.mapping_id, no_stack.address), (0, 0));
        assert_eq!(no_stack.line.len(), 1);
        let no_stack_function = function_of(&decoded, &no_stack.line[0]);
        assert_eq!(string(&decoded, no_stack_function.name), "[no stack]");
        let inlined = &decoded.location[2];
        assert_eq!(inlined.mapping_id, 1);
        let lines: Vec<(&str, &str, i64)> = inlined
            .line
            .iter()
            .map(|line| {
                let function = function_of(&decoded, line);
                (
                    string(&decoded, function.name),
                    string(&decoded, function.filename),
                    line.line,
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("inlined_helper", "src/app.c", 10),
                ("compute", "src/app.c", 42)
            ]
        );
        let kernel = &decoded.location[0];
        assert_eq!(kernel.mapping_id, 2);
        let kernel_function = function_of(&decoded, &kernel.line[0]);
        assert_eq!(string(&decoded, kernel_function.name), "do_syscall_64");
        assert_eq!(kernel_function.filename, 0);
        assert_eq!(decoded.location[6].mapping_id, 0, "jit_stub has no mapping");

        // Functions: deduplicated, ids 1..=n.
        let mut names: Vec<&str> = decoded
            .function
            .iter()
            .map(|function| string(&decoded, function.name))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "[no stack]",
                "[unknown]",
                "compute",
                "do_syscall_64",
                "entry_SYSCALL_64",
                "inlined_helper",
                "jit_stub",
                "main",
                "work_loop"
            ]
        );
        for (index, function) in decoded.function.iter().enumerate() {
            assert_eq!(function.id, index as u64 + 1);
        }

        // Mappings: ids from 1, build id, has_* flags from symbolization.
        assert_eq!(decoded.mapping.len(), 4);
        let app = &decoded.mapping[0];
        assert_eq!(app.id, 1);
        assert_eq!(string(&decoded, app.filename), "/usr/bin/app");
        assert_eq!(string(&decoded, app.build_id), "abcdef0123456789");
        assert_eq!((app.memory_start, app.memory_limit), (0x40_0000, 0x50_0000));
        assert!(
            app.has_functions && app.has_filenames && app.has_line_numbers && app.has_inline_frames
        );
        let kernel = &decoded.mapping[1];
        assert_eq!(string(&decoded, kernel.filename), "[kernel.kallsyms]");
        assert_eq!(kernel.build_id, 0);
        assert!(kernel.has_functions);
        let libwork = &decoded.mapping[2];
        assert_eq!(libwork.file_offset, 0x1000);
        let stripped = &decoded.mapping[3];
        assert_eq!(stripped.id, 4);
        assert!(!stripped.has_functions && !stripped.has_inline_frames);
    }

    #[test]
    fn empty_profile_round_trips() {
        let decoded = decode(&encode(&Profile::default())).expect("decode empty profile");
        assert!(decoded.sample.is_empty() && decoded.location.is_empty());
        assert_eq!(decoded.sample_type.len(), 2);
        assert_eq!(decoded.string_table[0], "");
    }

    #[test]
    fn functions_deduplicated_by_name_and_file() {
        let mut builder = PprofBuilder::new();
        let a = builder.function("f", Some("a.c"));
        assert_eq!(builder.function("f", Some("a.c")), a);
        let b = builder.function("f", Some("b.c"));
        let none = builder.function("f", None);
        assert_ne!(a, b);
        assert_ne!(a, none);
        assert_ne!(b, none);
        assert_eq!(builder.string(""), 0);
        assert_eq!(builder.string("f"), builder.string("f"));
    }

    #[test]
    fn out_of_range_indexes_are_dropped() {
        let mut profile = test_profile::profile();
        profile.locations[0].mapping = Some(99);
        profile.samples[0].stack.push(99);
        profile.samples[1].stack = vec![99];
        let decoded = decode(&encode(&profile)).expect("decode");
        assert_eq!(decoded.location[0].mapping_id, 0);
        assert_eq!(decoded.sample[0].location_id, [1, 2, 3, 4]);
        // Left without frames: the same `[no stack]` location as the empty stack of sample 4.
        let no_stack = profile.locations.len() as u64 + 1;
        assert_eq!(decoded.sample[1].location_id, [no_stack]);
        assert_eq!(decoded.sample[4].location_id, [no_stack]);
        assert_eq!(decoded.location.len(), profile.locations.len() + 1);
    }

    #[test]
    fn gzip_output() {
        let profile = test_profile::profile();
        let gzipped = encode_gzip(&profile).expect("gzip");
        assert_eq!(gzipped[..2], GZIP_MAGIC);
        let from_gzip = decode(&gzipped).expect("decode gzip");
        let from_plain = decode(&encode(&profile)).expect("decode plain");
        assert_eq!(from_gzip, from_plain);
    }

    #[test]
    fn decode_rejects_malformed_input() {
        let plain = encode(&test_profile::profile());
        let gzipped = encode_gzip(&test_profile::profile()).expect("gzip");

        let mut huge_varint = vec![0x48]; // field 9 (time_nanos), varint
        huge_varint.extend([0xff; 10]);
        huge_varint.push(0x01);
        let mut huge_length = vec![0x12]; // field 2 (sample), length-delimited
        huge_length.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        let mut bad_gzip = GZIP_MAGIC.to_vec();
        bad_gzip.extend(b"\x08\x00this is no deflate stream");
        let mut trailing_garbage = gzipped.clone();
        trailing_garbage.extend(b"garbage");

        let cases: [(&str, &[u8]); 9] = [
            ("garbage", &[0xff; 16]),
            ("end group tag", &[0x0c]),
            ("truncated plain", &plain[..plain.len() - 1]),
            // Cut inside the first sample_type message (a cut between messages is valid protobuf).
            ("truncated inside a message", &plain[..3]),
            ("truncated gzip", &gzipped[..gzipped.len() / 2]),
            ("gzip magic only", &GZIP_MAGIC),
            ("bad gzip", &bad_gzip),
            ("huge varint", &huge_varint),
            ("huge length", &huge_length),
        ];
        for (name, bytes) in cases {
            let result = decode(bytes);
            assert!(result.is_err(), "{name}: decoded {result:?}");
        }
        // Trailing bytes after a gzip member are read as a second (broken) member.
        assert!(matches!(
            decode(&trailing_garbage),
            Err(DecodeError::Decompress { .. })
        ));
    }

    #[test]
    fn decode_limits_decompressed_size() {
        let plain = encode(&test_profile::profile());
        let gzipped = encode_gzip(&test_profile::profile()).expect("gzip");
        let limit = plain.len() - 1;
        for bytes in [&plain, &gzipped] {
            match decode_with_limit(bytes, limit) {
                Err(DecodeError::TooLarge { limit_bytes }) => {
                    assert_eq!(limit_bytes, limit as u64)
                }
                other => panic!("expected TooLarge, got {other:?}"),
            }
            decode_with_limit(bytes, plain.len()).expect("exactly at the limit");
        }
        // A small gzip bomb: 1 MiB of zeros compresses to about 1 KiB.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&vec![0; 1 << 20]).expect("compress");
        let bomb = encoder.finish().expect("finish gzip");
        assert!(matches!(
            decode_with_limit(&bomb, 4096),
            Err(DecodeError::TooLarge { limit_bytes: 4096 })
        ));
    }

    /// xorshift64 (Marsaglia 2003): deterministic pseudo-random numbers without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn decode_never_panics_on_random_input() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let valid = encode(&test_profile::profile());
        let valid_gzip = encode_gzip(&test_profile::profile()).expect("gzip");
        for i in 0..2_000 {
            let bytes: Vec<u8> = match i % 4 {
                // Random bytes.
                0 => {
                    let len = (rng.next() % 512) as usize;
                    (0..len).map(|_| rng.next() as u8).collect()
                }
                // Random bytes behind the gzip magic.
                1 => {
                    let len = (rng.next() % 512) as usize;
                    GZIP_MAGIC
                        .into_iter()
                        .chain((0..len).map(|_| rng.next() as u8))
                        .collect()
                }
                // A valid profile, plain or gzip, with a few bytes overwritten and maybe cut.
                _ => {
                    let mut bytes = if i % 4 == 2 {
                        valid.clone()
                    } else {
                        valid_gzip.clone()
                    };
                    for _ in 0..1 + rng.next() % 4 {
                        let at = (rng.next() % bytes.len() as u64) as usize;
                        bytes[at] = rng.next() as u8;
                    }
                    let len = bytes.len() as u64;
                    bytes.truncate((len - rng.next() % (len / 8).max(1)) as usize);
                    bytes
                }
            };
            // The result does not matter, only that there is one.
            let _ = decode(&bytes);
        }
    }

    /// Reads the top-level `(field number, wire type)` keys of a protobuf message.
    fn keys(mut bytes: &[u8]) -> Vec<(u64, u64)> {
        fn varint(bytes: &mut &[u8]) -> u64 {
            let mut value = 0;
            for shift in (0..64).step_by(7) {
                let (&byte, rest) = bytes.split_first().expect("varint ends before the input");
                *bytes = rest;
                value |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            value
        }
        let mut keys = Vec::new();
        while !bytes.is_empty() {
            let key = varint(&mut bytes);
            let wire_type = key & 7;
            match wire_type {
                0 => {
                    varint(&mut bytes);
                }
                2 => {
                    let len = varint(&mut bytes) as usize;
                    bytes = &bytes[len..];
                }
                other => panic!("unexpected wire type {other}"),
            }
            keys.push((key >> 3, wire_type));
        }
        keys
    }

    /// Every field of every message is set to a non-default value and must come out with the
    /// field number and wire type of upstream `profile.proto`.
    #[test]
    fn field_numbers_match_profile_proto() {
        const VARINT: u64 = 0;
        const LEN: u64 = 2;
        let value_type = proto::ValueType { r#type: 1, unit: 2 };
        let label = proto::Label {
            key: 1,
            str: 2,
            num: 3,
            num_unit: 4,
        };
        let sample = proto::Sample {
            location_id: vec![1],
            value: vec![1],
            label: vec![label.clone()],
        };
        let mapping = proto::Mapping {
            id: 1,
            memory_start: 2,
            memory_limit: 3,
            file_offset: 4,
            filename: 5,
            build_id: 6,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        };
        let line = proto::Line {
            function_id: 1,
            line: 2,
            column: 3,
        };
        let location = proto::Location {
            id: 1,
            mapping_id: 2,
            address: 3,
            line: vec![line.clone()],
            is_folded: true,
        };
        let function = proto::Function {
            id: 1,
            name: 2,
            system_name: 3,
            filename: 4,
            start_line: 5,
        };
        let profile = proto::Profile {
            sample_type: vec![value_type.clone()],
            sample: vec![sample.clone()],
            mapping: vec![mapping.clone()],
            location: vec![location.clone()],
            function: vec![function.clone()],
            string_table: vec![String::new()],
            drop_frames: 7,
            keep_frames: 8,
            time_nanos: 9,
            duration_nanos: 10,
            period_type: Some(value_type.clone()),
            period: 12,
            comment: vec![13],
            default_sample_type: 14,
        };

        let varints = |n: u64| (1..=n).map(|field| (field, VARINT)).collect::<Vec<_>>();
        assert_eq!(keys(&value_type.encode_to_vec()), varints(2));
        assert_eq!(keys(&label.encode_to_vec()), varints(4));
        assert_eq!(keys(&mapping.encode_to_vec()), varints(10));
        assert_eq!(keys(&line.encode_to_vec()), varints(3));
        assert_eq!(keys(&function.encode_to_vec()), varints(5));
        // Repeated scalars are packed (proto3 default), hence length-delimited.
        assert_eq!(
            keys(&sample.encode_to_vec()),
            [(1, LEN), (2, LEN), (3, LEN)]
        );
        assert_eq!(
            keys(&location.encode_to_vec()),
            [(1, VARINT), (2, VARINT), (3, VARINT), (4, LEN), (5, VARINT)]
        );
        assert_eq!(
            keys(&profile.encode_to_vec()),
            [
                (1, LEN),
                (2, LEN),
                (3, LEN),
                (4, LEN),
                (5, LEN),
                (6, LEN),
                (7, VARINT),
                (8, VARINT),
                (9, VARINT),
                (10, VARINT),
                (11, LEN),
                (12, VARINT),
                (13, LEN),
                (14, VARINT)
            ]
        );
    }
}
