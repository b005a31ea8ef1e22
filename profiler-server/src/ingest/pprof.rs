//! pprof → normalized [`Profile`]: stacks of function names root first (inlined frames
//! expanded), kernel frames marked, sample string labels merged with the request's, one value
//! per sample (`samples/count` when present, else the first).
//!
//! Input is untrusted: every index (string table, location, function, mapping ids) is checked
//! and a bad one is an error, never a panic. The decoder itself is `profiler_pprof::decode`.

use std::collections::HashMap;

use profiler_pprof::proto;

use crate::model::{Frame, Labels, Profile, ProfileBuilder, SERVICE_LABEL};

/// The kernel's mapping file name in profiles of our agent (and of perf).
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
/// Suffix folded-stack tools put on kernel function names.
const KERNEL_SUFFIX: &str = "_[k]";
/// Deepest stack kept: deeper stacks keep their leaf-most frames under a `[truncated]` root.
pub const MAX_STACK_DEPTH: usize = 1024;

/// Why a pprof profile was rejected.
#[derive(Debug, thiserror::Error)]
pub enum PprofError {
    /// Not decodable (bad gzip, not protobuf, too large).
    #[error("cannot decode pprof")]
    Decode {
        #[source]
        source: profiler_pprof::DecodeError,
    },
    /// `string_table[0]` must be the empty string.
    #[error("pprof string table must start with the empty string")]
    StringTable,
    /// A string index is out of range.
    #[error("pprof {field} refers to string {index}, but the string table has {len} entries")]
    StringIndex {
        /// Which field held the index.
        field: &'static str,
        /// The index.
        index: i64,
        /// Size of the string table.
        len: usize,
    },
    /// A sample refers to a location id that is not defined.
    #[error("pprof sample refers to unknown location id {id}")]
    LocationId {
        /// The id.
        id: u64,
    },
    /// A location refers to a function id that is not defined.
    #[error("pprof location {location} refers to unknown function id {id}")]
    FunctionId {
        /// The location's id.
        location: u64,
        /// The function id.
        id: u64,
    },
    /// A location refers to a mapping id that is not defined.
    #[error("pprof location {location} refers to unknown mapping id {id}")]
    MappingId {
        /// The location's id.
        location: u64,
        /// The mapping id.
        id: u64,
    },
    /// Two entries share an id, or an id is 0.
    #[error("pprof {kind} id {id} is zero or not unique")]
    DuplicateId {
        /// `location`, `function` or `mapping`.
        kind: &'static str,
        /// The id.
        id: u64,
    },
    /// No sample types: the values have no meaning.
    #[error("pprof profile has no sample types")]
    NoSampleType,
    /// A sample has a different number of values than there are sample types.
    #[error("pprof sample has {values} values but the profile has {types} sample types")]
    ValueCount {
        /// Values of the sample.
        values: usize,
        /// Sample types of the profile.
        types: usize,
    },
}

/// Decodes (gzip or plain) and normalizes a pprof profile; see [`normalize`].
pub fn decode(bytes: &[u8], request_labels: &Labels) -> Result<Profile, PprofError> {
    let profile = profiler_pprof::decode(bytes).map_err(|source| PprofError::Decode { source })?;
    normalize(&profile, request_labels)
}

/// Normalizes a decoded profile. `request_labels` (sorted) are added to every sample's label
/// set; a sample label of the same name wins, except `service_name`, which the request sets.
/// `time_ns` is the profile's `time_nanos`; samples with a value ≤ 0 are dropped.
pub fn normalize(profile: &proto::Profile, request_labels: &Labels) -> Result<Profile, PprofError> {
    let strings = Strings::new(&profile.string_table)?;
    if profile.sample_type.is_empty() {
        return Err(PprofError::NoSampleType);
    }
    let mut value_index = 0;
    for (i, sample_type) in profile.sample_type.iter().enumerate() {
        let kind = strings.get(sample_type.r#type, "sample_type.type")?;
        let unit = strings.get(sample_type.unit, "sample_type.unit")?;
        if kind == "samples" && unit == "count" {
            value_index = i;
        }
    }
    let period_ns = match &profile.period_type {
        Some(period_type) => {
            let unit = strings.get(period_type.unit, "period_type.unit")?;
            strings.get(period_type.r#type, "period_type.type")?;
            if unit == "nanoseconds" {
                profile.period.max(0)
            } else {
                0
            }
        }
        None => 0,
    };
    for &comment in &profile.comment {
        strings.get(comment, "comment")?;
    }
    strings.get(profile.drop_frames, "drop_frames")?;
    strings.get(profile.keep_frames, "keep_frames")?;
    strings.get(profile.default_sample_type, "default_sample_type")?;

    let mut out = ProfileBuilder::new(profile.time_nanos, period_ns);
    let kernel_mappings = mappings(profile, &strings)?;
    let functions = functions(profile, &strings)?;
    let locations = Locations::new(profile, &kernel_mappings, &functions, &mut out)?;

    for sample in &profile.sample {
        if sample.value.len() != profile.sample_type.len() {
            return Err(PprofError::ValueCount {
                values: sample.value.len(),
                types: profile.sample_type.len(),
            });
        }
        let mut labels = request_labels.clone();
        for label in &sample.label {
            let key = strings.get(label.key, "label.key")?;
            let value = strings.get(label.str, "label.str")?;
            strings.get(label.num_unit, "label.num_unit")?;
            if key.is_empty() || value.is_empty() || key == SERVICE_LABEL {
                continue;
            }
            match labels.binary_search_by(|(name, _)| name.as_str().cmp(key)) {
                Ok(i) => labels[i].1 = value.to_owned(),
                Err(i) => labels.insert(i, (key.to_owned(), value.to_owned())),
            }
        }
        // Leaf first, at most MAX_STACK_DEPTH frames: a huge location referenced many times
        // must not cost memory or time beyond that (every id is still checked).
        let mut stack = Vec::new();
        let mut truncated = false;
        for &id in &sample.location_id {
            let frames = locations.frames(id)?;
            if truncated {
                continue;
            }
            for &frame in frames.iter().rev() {
                if stack.len() == MAX_STACK_DEPTH {
                    truncated = true;
                    break;
                }
                stack.push(frame);
            }
        }
        let value = sample.value[value_index];
        let Ok(value) = u64::try_from(value) else {
            continue;
        };
        if value == 0 {
            continue;
        }
        if truncated {
            stack.push(out.frame(Frame {
                name: "[truncated]".to_owned(),
                kernel: false,
            }));
        }
        stack.reverse();
        out.push(stack, labels, value);
    }
    Ok(out.finish())
}

/// The string table, with checked access.
struct Strings<'a> {
    table: &'a [String],
}

impl<'a> Strings<'a> {
    fn new(table: &'a [String]) -> Result<Self, PprofError> {
        match table.first() {
            Some(first) if first.is_empty() => Ok(Self { table }),
            _ => Err(PprofError::StringTable),
        }
    }

    fn get(&self, index: i64, field: &'static str) -> Result<&'a str, PprofError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.table.get(i))
            .map(String::as_str)
            .ok_or(PprofError::StringIndex {
                field,
                index,
                len: self.table.len(),
            })
    }
}

/// Mapping id → (is the kernel, file name).
fn mappings<'a>(
    profile: &'a proto::Profile,
    strings: &Strings<'a>,
) -> Result<HashMap<u64, (bool, &'a str)>, PprofError> {
    let mut out = HashMap::with_capacity(profile.mapping.len());
    for mapping in &profile.mapping {
        let filename = strings.get(mapping.filename, "mapping.filename")?;
        strings.get(mapping.build_id, "mapping.build_id")?;
        let kernel = filename.starts_with("[kernel");
        if mapping.id == 0 || out.insert(mapping.id, (kernel, filename)).is_some() {
            return Err(PprofError::DuplicateId {
                kind: "mapping",
                id: mapping.id,
            });
        }
    }
    Ok(out)
}

/// Function id → name (kernel suffix kept; stripped when the frame is built).
fn functions<'a>(
    profile: &'a proto::Profile,
    strings: &Strings<'a>,
) -> Result<HashMap<u64, &'a str>, PprofError> {
    let mut out = HashMap::with_capacity(profile.function.len());
    for function in &profile.function {
        let name = strings.get(function.name, "function.name")?;
        let system_name = strings.get(function.system_name, "function.system_name")?;
        strings.get(function.filename, "function.filename")?;
        let name = match (name, system_name) {
            ("", "") => "[unknown]",
            ("", system) => system,
            (name, _) => name,
        };
        if function.id == 0 || out.insert(function.id, name).is_some() {
            return Err(PprofError::DuplicateId {
                kind: "function",
                id: function.id,
            });
        }
    }
    Ok(out)
}

/// Every location resolved once to its frames, root first (a location's lines are innermost
/// first, so they are reversed).
struct Locations {
    /// Location id → range in `frames`.
    ranges: HashMap<u64, (usize, usize)>,
    frames: Vec<u32>,
}

impl Locations {
    fn new(
        profile: &proto::Profile,
        mappings: &HashMap<u64, (bool, &str)>,
        functions: &HashMap<u64, &str>,
        builder: &mut ProfileBuilder,
    ) -> Result<Self, PprofError> {
        let mut ranges = HashMap::with_capacity(profile.location.len());
        let mut frames = Vec::new();
        for location in &profile.location {
            let mapping =
                if location.mapping_id == 0 {
                    None
                } else {
                    Some(mappings.get(&location.mapping_id).copied().ok_or(
                        PprofError::MappingId {
                            location: location.id,
                            id: location.mapping_id,
                        },
                    )?)
                };
            let kernel_mapping = mapping.is_some_and(|(kernel, _)| kernel);
            let start = frames.len();
            if location.line.is_empty() {
                // Unsymbolized: name it by its mapping and address.
                let name = match mapping {
                    Some((_, file)) if !file.is_empty() => {
                        let base = file.rsplit('/').next().unwrap_or(file);
                        format!("{base}+0x{:x}", location.address)
                    }
                    _ => format!("0x{:x}", location.address),
                };
                let frame = Frame {
                    name,
                    kernel: kernel_mapping,
                };
                frames.push(builder.frame(frame));
            }
            for line in location.line.iter().rev() {
                let name = functions
                    .get(&line.function_id)
                    .ok_or(PprofError::FunctionId {
                        location: location.id,
                        id: line.function_id,
                    })?;
                let (name, kernel) = match name.strip_suffix(KERNEL_SUFFIX) {
                    Some(stripped) => (stripped, true),
                    None => (*name, kernel_mapping),
                };
                let frame = Frame {
                    name: name.to_owned(),
                    kernel,
                };
                frames.push(builder.frame(frame));
            }
            if location.id == 0 || ranges.insert(location.id, (start, frames.len())).is_some() {
                return Err(PprofError::DuplicateId {
                    kind: "location",
                    id: location.id,
                });
            }
        }
        Ok(Self { ranges, frames })
    }

    fn frames(&self, id: u64) -> Result<&[u32], PprofError> {
        let &(start, end) = self.ranges.get(&id).ok_or(PprofError::LocationId { id })?;
        Ok(&self.frames[start..end])
    }
}

#[cfg(test)]
#[path = "pprof_tests.rs"]
mod tests;
