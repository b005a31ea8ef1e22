//! OTLP profiles (development signal, `v1development`) → normalized [`Profile`]s, one per
//! OTLP profile. Stacks use the request's shared dictionary; every index is checked.
//!
//! Labels: resource `service.name` → `service_name`, `host.name` → `host_name`; sample and
//! profile string attributes `process.pid` → `pid`, `thread.id` → `tid`, `thread.name` →
//! `comm`, others under their own key; a sample's link → `trace_id`/`span_id`. Values are
//! sample counts: the sum of `values` (or the number of timestamps), divided by the period
//! when the sample type is in nanoseconds.

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::profiles::v1development::{
    Profile as OtlpProfile, ProfilesDictionary, Sample as OtlpSample,
};

use super::{attribute_string, service_name, time_ns, OtlpError};
use crate::ingest::pprof::MAX_STACK_DEPTH;
use crate::model::{Frame, Labels, Profile, ProfileBuilder, SpanId, TraceId, SERVICE_LABEL};

/// Converts every profile of an export request.
pub fn convert(request: &ExportProfilesServiceRequest) -> Result<Vec<Profile>, OtlpError> {
    let empty = ProfilesDictionary::default();
    let dictionary = request.dictionary.as_ref().unwrap_or(&empty);
    validate(dictionary)?;
    let mut out = Vec::new();
    for resource_profiles in &request.resource_profiles {
        let resource = resource_profiles.resource.as_ref();
        let mut base = vec![(SERVICE_LABEL.to_owned(), service_name(resource))];
        if let Some(host) = resource.and_then(|r| attribute_string(&r.attributes, "host.name")) {
            base.push(("host_name".to_owned(), host));
        }
        for scope_profiles in &resource_profiles.scope_profiles {
            for profile in &scope_profiles.profiles {
                out.push(convert_profile(dictionary, profile, &base)?);
            }
        }
    }
    Ok(out)
}

/// Checks every index inside the dictionary once, so that samples only pay for the frames
/// they keep.
fn validate(dictionary: &ProfilesDictionary) -> Result<(), OtlpError> {
    let tables = Tables { dictionary };
    for mapping in &dictionary.mapping_table {
        tables.string(mapping.filename_strindex)?;
    }
    for function in &dictionary.function_table {
        tables.string(function.name_strindex)?;
        tables.string(function.system_name_strindex)?;
        tables.string(function.filename_strindex)?;
    }
    for location in &dictionary.location_table {
        Tables::get(&dictionary.mapping_table, location.mapping_index, "mapping")?;
        for line in &location.lines {
            Tables::get(&dictionary.function_table, line.function_index, "function")?;
        }
    }
    for stack in &dictionary.stack_table {
        for &index in &stack.location_indices {
            Tables::get(&dictionary.location_table, index, "location")?;
        }
    }
    for attribute in &dictionary.attribute_table {
        tables.string(attribute.key_strindex)?;
    }
    Ok(())
}

struct Tables<'a> {
    dictionary: &'a ProfilesDictionary,
}

impl<'a> Tables<'a> {
    fn string(&self, index: i32) -> Result<&'a str, OtlpError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.dictionary.string_table.get(i))
            .map(String::as_str)
            .ok_or_else(|| OtlpError::new(format!("profile string index {index} out of range")))
    }

    fn get<T>(table: &'a [T], index: i32, what: &str) -> Result<&'a T, OtlpError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| table.get(i))
            .ok_or_else(|| OtlpError::new(format!("profile {what} index {index} out of range")))
    }

    /// String attributes as labels, well-known keys renamed.
    fn labels(&self, indices: &[i32], labels: &mut Labels) -> Result<(), OtlpError> {
        for &index in indices {
            let attribute = Self::get(&self.dictionary.attribute_table, index, "attribute")?;
            let key = self.string(attribute.key_strindex)?;
            let value = match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::StringValueStrindex(i)) => self.string(*i)?.to_owned(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                _ => continue,
            };
            let key = match key {
                "process.pid" => "pid",
                "thread.id" => "tid",
                "thread.name" => "comm",
                "" | SERVICE_LABEL | "service.name" => continue,
                other => other,
            };
            if value.is_empty() {
                continue;
            }
            labels.retain(|(k, _)| k != key);
            labels.push((key.to_owned(), value));
        }
        Ok(())
    }
}

fn convert_profile(
    dictionary: &ProfilesDictionary,
    profile: &OtlpProfile,
    base: &Labels,
) -> Result<Profile, OtlpError> {
    let tables = Tables { dictionary };
    let unit = match &profile.sample_type {
        Some(t) => tables.string(t.unit_strindex)?,
        None => "",
    };
    let period_ns = match &profile.period_type {
        Some(t) if tables.string(t.unit_strindex)? == "nanoseconds" => profile.period.max(0),
        _ => 0,
    };
    let mut profile_labels = base.clone();
    tables.labels(&profile.attribute_indices, &mut profile_labels)?;

    let mut out = ProfileBuilder::new(
        time_ns(profile.time_unix_nano, "time_unix_nano")?,
        period_ns,
    );
    for sample in &profile.samples {
        let value = sample_value(sample, unit, period_ns);
        if value == 0 {
            continue;
        }
        let mut labels = profile_labels.clone();
        tables.labels(&sample.attribute_indices, &mut labels)?;
        if sample.link_index != 0 {
            let link = Tables::get(&dictionary.link_table, sample.link_index, "link")?;
            if let Some(trace) = TraceId::from_slice(&link.trace_id) {
                labels.push(("trace_id".to_owned(), trace.to_string()));
            }
            if let Some(span) = SpanId::from_slice(&link.span_id) {
                labels.push(("span_id".to_owned(), span.to_string()));
            }
        }
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        // Leaf first, bounded (see `pprof::MAX_STACK_DEPTH`); every index is still checked.
        let mut stack = Vec::new();
        let stack_entry = Tables::get(&dictionary.stack_table, sample.stack_index, "stack")?;
        // `validate` checked every index of the tables: the leaf-most locations suffice here.
        for &location_index in stack_entry.location_indices.iter().take(MAX_STACK_DEPTH) {
            let location = Tables::get(&dictionary.location_table, location_index, "location")?;
            let mapping =
                Tables::get(&dictionary.mapping_table, location.mapping_index, "mapping")?;
            let kernel = tables
                .string(mapping.filename_strindex)?
                .starts_with("[kernel");
            let mut names = Vec::new();
            if location.lines.is_empty() {
                names.push(format!("0x{:x}", location.address));
            }
            for line in location.lines.iter().take(MAX_STACK_DEPTH) {
                let function =
                    Tables::get(&dictionary.function_table, line.function_index, "function")?;
                let name = match tables.string(function.name_strindex)? {
                    "" => tables.string(function.system_name_strindex)?,
                    name => name,
                };
                names.push(if name.is_empty() { "[unknown]" } else { name }.to_owned());
            }
            for name in names {
                if stack.len() >= MAX_STACK_DEPTH {
                    break;
                }
                stack.push(out.frame(Frame { name, kernel }));
            }
        }
        stack.reverse();
        out.push(stack, labels, value);
    }
    Ok(out.finish())
}

/// Number of samples a sample stands for.
fn sample_value(sample: &OtlpSample, unit: &str, period_ns: i64) -> u64 {
    let raw: i64 = if sample.values.is_empty() {
        i64::try_from(sample.timestamps_unix_nano.len()).unwrap_or(i64::MAX)
    } else {
        sample.values.iter().fold(0i64, |a, v| a.saturating_add(*v))
    };
    let raw = u64::try_from(raw).unwrap_or(0);
    match u64::try_from(period_ns) {
        Ok(period) if unit == "nanoseconds" && period > 0 => raw.div_ceil(period),
        _ => raw,
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::profiles::v1development::{
        Function, KeyValueAndUnit, Line, Link, Location, Mapping, ResourceProfiles, ScopeProfiles,
        Stack, ValueType,
    };

    use super::*;

    #[test]
    fn mutated_requests_never_panic() {
        crate::ingest::otlp::fuzz_converter(&request(), |request| {
            let _ = convert(request);
        });
    }

    fn request() -> ExportProfilesServiceRequest {
        let strings: Vec<String> = [
            "",
            "main",
            "leaf",
            "/bin/app",
            "thread.name",
            "worker",
            "samples",
            "count",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let dictionary = ProfilesDictionary {
            mapping_table: vec![
                Mapping::default(),
                Mapping {
                    filename_strindex: 3,
                    ..Default::default()
                },
            ],
            location_table: vec![
                Location::default(),
                Location {
                    mapping_index: 1,
                    lines: vec![Line {
                        function_index: 2,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                Location {
                    mapping_index: 1,
                    lines: vec![Line {
                        function_index: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            function_table: vec![
                Function::default(),
                Function {
                    name_strindex: 1,
                    ..Default::default()
                },
                Function {
                    name_strindex: 2,
                    ..Default::default()
                },
            ],
            link_table: vec![
                Link::default(),
                Link {
                    trace_id: vec![7; 16],
                    span_id: vec![8; 8],
                },
            ],
            string_table: strings,
            attribute_table: vec![
                KeyValueAndUnit::default(),
                KeyValueAndUnit {
                    key_strindex: 4,
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValueStrindex(5)),
                    }),
                    unit_strindex: 0,
                },
            ],
            stack_table: vec![
                Stack::default(),
                Stack {
                    location_indices: vec![1, 2],
                },
            ],
        };
        let profile = OtlpProfile {
            sample_type: Some(ValueType {
                type_strindex: 6,
                unit_strindex: 7,
            }),
            samples: vec![OtlpSample {
                stack_index: 1,
                attribute_indices: vec![1],
                link_index: 1,
                values: vec![],
                timestamps_unix_nano: vec![1, 2, 3],
            }],
            time_unix_nano: 1_764_000_000_000_000_000,
            ..Default::default()
        };
        ExportProfilesServiceRequest {
            resource_profiles: vec![ResourceProfiles {
                scope_profiles: vec![ScopeProfiles {
                    profiles: vec![profile],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            dictionary: Some(dictionary),
        }
    }

    #[test]
    fn otlp_profiles_normalize() {
        let profiles = convert(&request()).expect("valid");
        let p = &profiles[0];
        assert_eq!(p.samples.len(), 1);
        assert_eq!(p.samples[0].value, 3);
        let names: Vec<_> = p.samples[0]
            .stack
            .iter()
            .map(|&f| p.frames[f as usize].name.as_str())
            .collect();
        assert_eq!(names, ["main", "leaf"]);
        let labels = &p.label_sets[0];
        assert!(labels.contains(&("comm".to_owned(), "worker".to_owned())));
        assert!(labels.contains(&("span_id".to_owned(), "08".repeat(8))));
        assert!(labels.contains(&("service_name".to_owned(), "unknown_service".to_owned())));
    }

    #[test]
    fn bad_indices_are_errors() {
        let mut r = request();
        r.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = 9;
        assert!(convert(&r).is_err());
        let mut r = request();
        if let Some(d) = r.dictionary.as_mut() {
            d.stack_table[1].location_indices.push(-1);
        }
        assert!(convert(&r).is_err());
        let mut r = request();
        if let Some(d) = r.dictionary.as_mut() {
            d.function_table[1].name_strindex = 100;
        }
        assert!(convert(&r).is_err());
    }
}
