//! Tests of pprof normalization: a real agent profile, hand-built edge cases, malformed input,
//! and mutation fuzzing (no input may panic).

use std::io::{Read, Write};

use prost::Message;

use super::*;
use crate::model::Sample;

const BURN3: &[u8] = include_bytes!("../../tests/data/burn3.pb.gz");

use crate::model::labels;

/// Total value per leaf function name.
fn leaf_totals(profile: &Profile) -> HashMap<String, u64> {
    let mut totals = HashMap::new();
    for sample in &profile.samples {
        if let Some(&leaf) = sample.stack.last() {
            *totals
                .entry(profile.frames[leaf as usize].name.clone())
                .or_insert(0) += sample.value;
        }
    }
    totals
}

#[test]
fn agent_profile_normalizes_with_labels_and_ratio() {
    let request = labels(&[("service_name", "burn"), ("host_name", "h1")]);
    let profile = decode(BURN3, &request).expect("fixture decodes");
    assert!(profile.time_ns > 0);
    assert_eq!(profile.period_ns, 1_000_000_000 / 99);
    assert!(profile.total() > 100, "{} samples", profile.total());
    let totals = leaf_totals(&profile);
    let alpha = totals.get("burn_alpha").copied().unwrap_or(0) as f64;
    let beta = totals.get("burn_beta").copied().unwrap_or(0) as f64;
    let gamma = totals.get("burn_gamma").copied().unwrap_or(0) as f64;
    assert!(alpha > 0.0, "{totals:?}");
    assert!((1.4..2.8).contains(&(beta / alpha)), "{totals:?}");
    assert!((2.2..4.0).contains(&(gamma / alpha)), "{totals:?}");
    // Stacks are root first: main is above the burners.
    let sample = profile
        .samples
        .iter()
        .find(|s| profile.frames[*s.stack.last().expect("frames") as usize].name == "burn_gamma")
        .expect("a burn_gamma sample");
    let names: Vec<_> = sample
        .stack
        .iter()
        .map(|&f| profile.frames[f as usize].name.as_str())
        .collect();
    let main = names
        .iter()
        .position(|n| *n == "main")
        .expect("main on stack");
    assert_eq!(names.last(), Some(&"burn_gamma"));
    assert!(main < names.len() - 1, "{names:?}");
    // Labels: the request's plus the sample's pid/tid/comm.
    for set in &profile.label_sets {
        let keys: Vec<_> = set.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["comm", "host_name", "pid", "service_name", "tid"]);
        assert!(set.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    }
}

/// A small profile builder: strings are interned, ids are 1-based positions.
#[derive(Default)]
struct Builder {
    profile: proto::Profile,
}

impl Builder {
    fn new() -> Self {
        let mut b = Self::default();
        b.profile.string_table.push(String::new());
        let samples = b.s("samples");
        let count = b.s("count");
        let cpu = b.s("cpu");
        let ns = b.s("nanoseconds");
        b.profile.sample_type = vec![
            proto::ValueType {
                r#type: cpu,
                unit: ns,
            },
            proto::ValueType {
                r#type: samples,
                unit: count,
            },
        ];
        b.profile.period_type = Some(proto::ValueType {
            r#type: cpu,
            unit: ns,
        });
        b.profile.period = 10_000_000;
        b.profile.time_nanos = 1_764_000_000_000_000_000;
        b
    }

    fn s(&mut self, s: &str) -> i64 {
        let table = &mut self.profile.string_table;
        let i = table.iter().position(|x| x == s).unwrap_or_else(|| {
            table.push(s.to_owned());
            table.len() - 1
        });
        i as i64
    }

    fn mapping(&mut self, file: &str) -> u64 {
        let filename = self.s(file);
        let id = self.profile.mapping.len() as u64 + 1;
        self.profile.mapping.push(proto::Mapping {
            id,
            filename,
            ..Default::default()
        });
        id
    }

    fn function(&mut self, name: &str) -> u64 {
        let name = self.s(name);
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(proto::Function {
            id,
            name,
            ..Default::default()
        });
        id
    }

    /// A location with `functions` innermost first.
    fn location(&mut self, mapping: u64, functions: &[&str]) -> u64 {
        let line = functions
            .iter()
            .map(|f| proto::Line {
                function_id: self.function(f),
                ..Default::default()
            })
            .collect();
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(proto::Location {
            id,
            mapping_id: mapping,
            address: 0x1000 * id,
            line,
            ..Default::default()
        });
        id
    }

    fn sample(&mut self, leaf_first: &[u64], count: i64, labels: &[(&str, &str)]) {
        let label = labels
            .iter()
            .map(|(k, v)| proto::Label {
                key: self.s(k),
                str: self.s(v),
                ..Default::default()
            })
            .collect();
        self.profile.sample.push(proto::Sample {
            location_id: leaf_first.to_vec(),
            value: vec![count * 10_000_000, count],
            label,
        });
    }
}

fn names(profile: &Profile, sample: &Sample) -> Vec<(String, bool)> {
    sample
        .stack
        .iter()
        .map(|&f| {
            let frame = &profile.frames[f as usize];
            (frame.name.clone(), frame.kernel)
        })
        .collect()
}

#[test]
fn inlined_lines_expand_and_kernel_frames_are_marked() {
    let mut b = Builder::new();
    let exe = b.mapping("/usr/bin/app");
    let kernel = b.mapping(KERNEL_MAPPING);
    // `leaf` was inlined into `mid`; the location's lines are innermost first.
    let user = b.location(exe, &["leaf", "mid"]);
    let main = b.location(exe, &["main"]);
    let sys = b.location(kernel, &["do_syscall_64"]);
    let suffixed = b.location(exe, &["vfs_read_[k]"]);
    let bare = b.location(exe, &[]);
    b.sample(
        &[suffixed, sys, user, main],
        3,
        &[("pid", "7"), ("comm", "app")],
    );
    b.sample(&[bare, main], 1, &[("pid", "7"), ("comm", "app")]);
    let profile = normalize(&b.profile, &labels(&[("service_name", "svc")])).expect("valid");
    assert_eq!(profile.samples.len(), 2);
    assert_eq!(profile.period_ns, 10_000_000);
    let expected = [
        ("main", false),
        ("mid", false),
        ("leaf", false),
        ("do_syscall_64", true),
        ("vfs_read", true),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(n, k)| ((*n).to_owned(), *k))
        .collect();
    assert_eq!(names(&profile, &profile.samples[0]), expected);
    assert_eq!(profile.samples[0].value, 3, "samples/count, not cpu");
    assert_eq!(
        names(&profile, &profile.samples[1]),
        [("main".to_owned(), false), ("app+0x5000".to_owned(), false)]
    );
    assert_eq!(profile.label_sets.len(), 1, "equal label sets are shared");
    assert_eq!(
        profile.label_sets[0],
        labels(&[("comm", "app"), ("pid", "7"), ("service_name", "svc")])
    );
}

#[test]
fn first_value_without_samples_count_and_request_service_wins() {
    let mut b = Builder::new();
    b.profile.sample_type.truncate(1);
    let exe = b.mapping("/bin/x");
    let f = b.location(exe, &["f"]);
    b.sample(&[f], 2, &[("service_name", "spoofed"), ("pid", "1")]);
    b.profile.sample[0].value.truncate(1);
    b.sample(&[f], 0, &[]);
    b.profile.sample[1].value = vec![0];
    b.sample(&[f], 0, &[]);
    b.profile.sample[2].value = vec![-5];
    let profile = normalize(&b.profile, &labels(&[("service_name", "real")])).expect("valid");
    assert_eq!(
        profile.samples.len(),
        1,
        "zero and negative values are dropped"
    );
    assert_eq!(profile.samples[0].value, 20_000_000);
    assert_eq!(
        profile.label_sets[0],
        labels(&[("pid", "1"), ("service_name", "real")])
    );
}

#[test]
fn deep_stacks_are_truncated_at_the_root() {
    let mut b = Builder::new();
    let exe = b.mapping("/bin/x");
    let f = b.location(exe, &["f"]);
    let leaf = b.location(exe, &["leaf"]);
    let mut stack = vec![leaf];
    stack.extend(std::iter::repeat_n(f, 5000));
    b.sample(&stack, 1, &[]);
    let profile = normalize(&b.profile, &Labels::new()).expect("valid");
    let names = names(&profile, &profile.samples[0]);
    assert_eq!(names.len(), MAX_STACK_DEPTH + 1);
    assert_eq!(names[0].0, "[truncated]");
    assert_eq!(names.last().map(|n| n.0.as_str()), Some("leaf"));

    // A location with thousands of inlined lines, referenced thousands of times by many samples:
    // unbounded, 100 × 3000 × 3000 frames; bounded, fast and small.
    let mut b = Builder::new();
    let exe = b.mapping("/bin/x");
    let names: Vec<String> = (0..3000).map(|i| format!("inl{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let wide = b.location(exe, &names);
    for _ in 0..100 {
        b.sample(&vec![wide; 3000], 1, &[]);
    }
    let started = std::time::Instant::now();
    let profile = normalize(&b.profile, &Labels::new()).expect("valid");
    assert!(profile
        .samples
        .iter()
        .all(|s| s.stack.len() == MAX_STACK_DEPTH + 1));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

fn expect_error(profile: &proto::Profile, what: &str) {
    match normalize(profile, &Labels::new()) {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => assert!(!e.to_string().is_empty(), "{what}"),
    }
}

#[test]
fn out_of_range_references_are_errors() {
    let valid = || {
        let mut b = Builder::new();
        let exe = b.mapping("/bin/x");
        let f = b.location(exe, &["f", "g"]);
        b.sample(&[f], 1, &[("pid", "1")]);
        b
    };
    normalize(&valid().profile, &Labels::new()).expect("the base case is valid");

    let mut b = valid();
    b.profile.function[0].name = 999;
    expect_error(&b.profile, "function name index");
    let mut b = valid();
    b.profile.function[0].name = -1;
    expect_error(&b.profile, "negative string index");
    let mut b = valid();
    b.profile.sample[0].label[0].str = 1 << 40;
    expect_error(&b.profile, "label value index");
    let mut b = valid();
    b.profile.sample[0].label[0].key = 77;
    expect_error(&b.profile, "label key index");
    let mut b = valid();
    b.profile.mapping[0].filename = 12345;
    expect_error(&b.profile, "mapping filename index");
    let mut b = valid();
    b.profile.sample_type[0].unit = 50;
    expect_error(&b.profile, "sample type index");
    let mut b = valid();
    b.profile.sample[0].location_id = vec![42];
    expect_error(&b.profile, "location id");
    let mut b = valid();
    b.profile.location[0].line[1].function_id = 9;
    expect_error(&b.profile, "function id");
    let mut b = valid();
    b.profile.location[0].mapping_id = 3;
    expect_error(&b.profile, "mapping id");
    let mut b = valid();
    let duplicate = b.profile.function[0].clone();
    b.profile.function.push(duplicate);
    expect_error(&b.profile, "duplicate function id");
    let mut b = valid();
    b.profile.location[0].id = 0;
    expect_error(&b.profile, "zero location id");
    let mut b = valid();
    b.profile.string_table[0] = "x".to_owned();
    expect_error(&b.profile, "string 0 not empty");
    let mut b = valid();
    b.profile.string_table.clear();
    expect_error(&b.profile, "empty string table");
    let mut b = valid();
    b.profile.sample_type.clear();
    expect_error(&b.profile, "no sample types");
    let mut b = valid();
    b.profile.sample[0].value.push(1);
    expect_error(&b.profile, "value count");
    let mut b = valid();
    b.profile.comment = vec![100];
    expect_error(&b.profile, "comment index");
}

#[test]
fn malformed_bytes_are_errors() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"this is not a profile at all".to_vec()),
        (
            "bad gzip",
            vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef],
        ),
        ("truncated gzip", BURN3[..BURN3.len() / 2].to_vec()),
        // Field 1 (sample_type), length-delimited, with an 11-byte varint length.
        (
            "huge varint",
            vec![
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ),
        // Field 6 (string table) claims 2^62 bytes.
        (
            "huge length",
            vec![0x32, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40],
        ),
        ("all ones", vec![0xff; 64]),
    ];
    for (what, bytes) in cases {
        assert!(decode(&bytes, &Labels::new()).is_err(), "{what}: accepted");
    }
}

#[test]
fn gzip_bombs_are_refused_not_inflated() {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..300 {
        encoder.write_all(&zeros).expect("compress");
    }
    let bomb = encoder.finish().expect("compress");
    assert!(bomb.len() < 1 << 20);
    let error = decode(&bomb, &Labels::new()).expect_err("300 MiB is over the limit");
    assert!(matches!(
        error,
        PprofError::Decode {
            source: profiler_pprof::DecodeError::TooLarge { .. }
        }
    ));
}

/// xorshift64*: deterministic randomness for the fuzz tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("fixture is gzip");
    out
}

#[test]
fn mutated_profiles_never_panic() {
    let plain = gunzip(BURN3);
    let request = labels(&[("service_name", "fuzz")]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..2000 {
        let mut bytes = plain.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bytes.len());
            match rng.below(5) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                2 => bytes.insert(at, rng.next() as u8),
                3 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let input = if round % 4 == 0 {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&bytes).expect("compress");
            encoder.finish().expect("compress")
        } else {
            bytes
        };
        match decode(&input, &request) {
            Ok(profile) => {
                accepted += 1;
                for sample in &profile.samples {
                    assert!(sample
                        .stack
                        .iter()
                        .all(|&f| (f as usize) < profile.frames.len()));
                    assert!((sample.labels as usize) < profile.label_sets.len());
                }
            }
            Err(_) => rejected += 1,
        }
    }
    assert!(rejected > 0 && accepted + rejected == 2000);
}

#[test]
fn structurally_mutated_profiles_never_panic() {
    let base = profiler_pprof::decode(BURN3).expect("fixture decodes");
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let mut p = base.clone();
        let wild = |rng: &mut Rng| -> i64 {
            match rng.below(4) {
                0 => -(rng.below(10) as i64),
                1 => rng.below(p_len_hint()) as i64,
                2 => i64::MAX - rng.below(3) as i64,
                _ => rng.next() as i64,
            }
        };
        match rng.below(9) {
            0 if !p.function.is_empty() => {
                let i = rng.below(p.function.len());
                p.function[i].name = wild(&mut rng);
            }
            1 if !p.location.is_empty() => {
                let i = rng.below(p.location.len());
                p.location[i].id = rng.below(50) as u64;
            }
            2 if !p.sample.is_empty() => {
                let i = rng.below(p.sample.len());
                p.sample[i].location_id.push(rng.next());
            }
            3 if !p.location.is_empty() => {
                let i = rng.below(p.location.len());
                if let Some(line) = p.location[i].line.first_mut() {
                    line.function_id = rng.below(100) as u64;
                }
            }
            4 if !p.sample.is_empty() => {
                let i = rng.below(p.sample.len());
                if let Some(label) = p.sample[i].label.first_mut() {
                    label.str = wild(&mut rng);
                }
            }
            5 if !p.sample.is_empty() => {
                let i = rng.below(p.sample.len());
                p.sample[i].value = (0..rng.below(4)).map(|_| rng.next() as i64).collect();
            }
            6 => p.string_table.truncate(rng.below(p.string_table.len())),
            7 if !p.mapping.is_empty() => {
                let i = rng.below(p.mapping.len());
                p.mapping[i].id = rng.below(4) as u64;
            }
            _ => p.sample_type.truncate(rng.below(3)),
        }
        let _ = normalize(&p, &Labels::new());
        // And through the byte decoder too.
        let _ = decode(&p.encode_to_vec(), &Labels::new());
    }
}

fn p_len_hint() -> usize {
    64
}
