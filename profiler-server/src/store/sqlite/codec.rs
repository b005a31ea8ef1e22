//! Compact blobs of the SQLite store: a stack is the LEB128 varints of its function ids (root
//! first); a bucket's counts are `(stack id delta, count)` varint pairs, stack ids ascending.
//! Decoding a corrupt blob is an error, never a panic.

use std::collections::BTreeMap;

use super::super::StoreError;

/// Appends `value` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a varint at `*pos`, advancing it.
#[inline]
pub fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, StoreError> {
    // Most stack id deltas and counts fit in one byte.
    if let Some(&byte) = bytes.get(*pos) {
        if byte < 0x80 {
            *pos += 1;
            return Ok(u64::from(byte));
        }
    }
    get_long_varint(bytes, pos)
}

/// [`get_varint`] for two bytes or more (or a truncated blob).
fn get_long_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, StoreError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos).ok_or_else(|| StoreError::Corrupt {
            what: "truncated varint",
        })?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(StoreError::Corrupt {
        what: "varint longer than 10 bytes",
    })
}

/// Encodes a stack of function ids.
pub fn encode_stack(functions: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(functions.len() * 2);
    for &f in functions {
        put_varint(&mut out, u64::from(f));
    }
    out
}

/// Decodes a stack of function ids.
pub fn decode_stack(bytes: &[u8]) -> Result<Vec<u32>, StoreError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut pos = 0;
    while pos < bytes.len() {
        let id = get_varint(bytes, &mut pos)?;
        out.push(u32::try_from(id).map_err(|_| StoreError::Corrupt {
            what: "function id out of range",
        })?);
    }
    Ok(out)
}

/// 64-bit FNV-1a of a stack blob: stable across versions and platforms, unlike std's hasher.
pub fn stack_hash(blob: &[u8]) -> i64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &byte in blob {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Encodes per-stack counts.
pub fn encode_counts(counts: &BTreeMap<i64, u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(counts.len() * 3);
    let mut previous = 0i64;
    for (&stack, &count) in counts {
        put_varint(&mut out, (stack - previous) as u64);
        put_varint(&mut out, count);
        previous = stack;
    }
    out
}

/// Calls `f(stack id, count)` for every pair of a counts blob.
#[inline]
pub fn for_each_count(bytes: &[u8], mut f: impl FnMut(i64, u64)) -> Result<(), StoreError> {
    let mut pos = 0;
    let mut stack = 0i64;
    while pos < bytes.len() {
        let delta = get_varint(bytes, &mut pos)?;
        let delta = i64::try_from(delta).map_err(|_| StoreError::Corrupt {
            what: "stack id delta out of range",
        })?;
        // Errors are built lazily: an eager `StoreError` costs a drop per pair.
        stack = stack
            .checked_add(delta)
            .ok_or_else(|| StoreError::Corrupt {
                what: "stack id out of range",
            })?;
        let count = get_varint(bytes, &mut pos)?;
        f(stack, count);
    }
    Ok(())
}

/// Adds a counts blob into a map.
pub fn merge_counts(bytes: &[u8], into: &mut BTreeMap<i64, u64>) -> Result<(), StoreError> {
    for_each_count(bytes, |stack, count| {
        *into.entry(stack).or_insert(0) += count
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_round_trip() {
        let stack = [1, 127, 128, 300, u32::MAX, 5];
        let blob = encode_stack(&stack);
        assert_eq!(decode_stack(&blob).expect("valid"), stack);
        assert_eq!(stack_hash(&blob), stack_hash(&encode_stack(&stack)));
        assert_ne!(stack_hash(&blob), stack_hash(&encode_stack(&stack[1..])));
        assert_eq!(encode_stack(&[1, 2, 3]).len(), 3, "small ids take one byte");
    }

    #[test]
    fn counts_round_trip_and_merge() {
        let counts: BTreeMap<i64, u64> = [(3, 1), (200, 70), (100_000, 1 << 40)].into();
        let blob = encode_counts(&counts);
        let mut merged = BTreeMap::new();
        merge_counts(&blob, &mut merged).expect("valid");
        assert_eq!(merged, counts);
        merge_counts(&encode_counts(&[(3, 2), (4, 1)].into()), &mut merged).expect("valid");
        assert_eq!(merged[&3], 3);
        assert_eq!(merged[&4], 1);
    }

    #[test]
    fn corrupt_blobs_are_errors() {
        assert!(decode_stack(&[0x80]).is_err());
        assert!(decode_stack(&[0xff; 11]).is_err());
        assert!(decode_stack(&encode_stack(&[1])[..0])
            .expect("empty")
            .is_empty());
        let mut big = Vec::new();
        put_varint(&mut big, u64::from(u32::MAX) + 1);
        assert!(decode_stack(&big).is_err());
        assert!(
            for_each_count(&[1], |_, _| {}).is_err(),
            "a delta without count"
        );
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX);
        put_varint(&mut huge, 1);
        assert!(for_each_count(&huge, |_, _| {}).is_err());
    }
}
