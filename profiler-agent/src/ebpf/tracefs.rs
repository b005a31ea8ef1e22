//! tracefs access for tracepoint programs: mounting it when missing and reading event formats.

use std::{ffi::CString, fs, io, path::Path};

/// Where the kernel exposes tracefs.
pub const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted at {TRACEFS} and mounting it failed: {source} (as root, run \
         `mount -t tracefs nodev {TRACEFS}`)"
    )]
    Mount {
        #[source]
        source: io::Error,
    },
    #[error("cannot read tracepoint format {path}: {source}")]
    ReadFormat {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("tracepoint format {path} has no field `{field}`")]
    NoField { path: String, field: String },
}

/// Mounts tracefs at its usual place when it is not mounted (fresh machines often lack it).
pub fn ensure_mounted() -> Result<(), TracefsError> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let c = |s: &str| CString::new(s).expect("no NUL in constant");
    let (source, target, fstype) = (c("nodev"), c(TRACEFS), c("tracefs"));
    // SAFETY: all pointers are valid NUL-terminated strings living across the call; data is null.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(TracefsError::Mount {
            source: io::Error::last_os_error(),
        });
    }
    eprintln!("note: mounted tracefs at {TRACEFS}");
    Ok(())
}

/// Byte offset of `field` in the records of tracepoint `category:event`.
pub fn field_offset(category: &str, event: &str, field: &str) -> Result<u32, TracefsError> {
    let path = format!("{TRACEFS}/events/{category}/{event}/format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::ReadFormat {
        path: path.clone(),
        source,
    })?;
    parse_field_offset(&text, field).ok_or(TracefsError::NoField {
        path,
        field: field.to_string(),
    })
}

/// Finds `offset:N;` on the line declaring `field` (`field:pid_t child_pid; offset:20;...`).
fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.rsplit([' ', '*']).next()?;
        // `char comm[16]` declares `comm`.
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = rest.trim().strip_prefix("offset:")?.split(';').next()?;
        offset.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    #[test]
    fn finds_offsets_in_old_and_new_fork_formats() {
        // Kernel 6.18: comm fields became __data_loc.
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
                   \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(new, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(new, "child_comm"), Some(16));
        // Kernel 5.10 to 6.12: fixed-size comm arrays.
        let old = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                   \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(old, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(old, "parent_comm"), Some(8));
        assert_eq!(parse_field_offset(old, "nope"), None);
    }
}
