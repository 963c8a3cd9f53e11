//! Sizes: how a requested capacity becomes a disk size, and byte counts as
//! people write them (`50Gi`, `1073741824`).

use crate::echo::echo;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// How requested capacities become disk sizes.
#[derive(Debug, Clone, Copy)]
pub struct SizePolicy {
    /// Sizes are rounded up to a multiple of this (1 MiB: the RDS takes
    /// exact bytes, and MiB keeps partition-free filesystems aligned).
    pub granularity: u64,
    /// The smallest volume made; also the size when none is asked for.
    pub minimum: u64,
}

impl Default for SizePolicy {
    fn default() -> Self {
        SizePolicy {
            granularity: MIB,
            minimum: GIB,
        }
    }
}

/// Why a capacity range cannot be met.
#[derive(Debug, PartialEq, Eq)]
pub enum CapacityError {
    /// Negative numbers, or a limit below the requirement (INVALID_ARGUMENT).
    Invalid(String),
    /// A valid range no size of ours fits in (OUT_OF_RANGE).
    OutOfRange(String),
}

impl SizePolicy {
    /// The size to create for `required`/`limit` bytes (CSI CapacityRange;
    /// 0 means unset): the requirement (or the minimum) rounded up to the
    /// granularity, which must not pass the limit.
    pub fn size_for(&self, required: i64, limit: i64) -> Result<u64, CapacityError> {
        if required < 0 || limit < 0 {
            return Err(CapacityError::Invalid(format!(
                "capacity_range must not be negative (required_bytes {required}, limit_bytes {limit})"
            )));
        }
        let (required, limit) = (required as u64, limit as u64);
        if limit > 0 && limit < required {
            return Err(CapacityError::Invalid(format!(
                "capacity_range.limit_bytes {limit} is below required_bytes {required}"
            )));
        }
        let wanted = required.max(self.minimum);
        let size = wanted.div_ceil(self.granularity) * self.granularity;
        if limit > 0 && size > limit {
            return Err(CapacityError::OutOfRange(format!(
                "capacity_range.limit_bytes {limit} is below the smallest size this driver can make for it ({size} bytes: at least {} bytes, in steps of {} bytes)",
                self.minimum, self.granularity
            )));
        }
        Ok(size)
    }
}

/// Parses a byte count: plain digits, or a number with a binary suffix
/// `K`/`M`/`G`/`T` or `Ki`/`Mi`/`Gi`/`Ti` (RouterOS and Kubernetes both read
/// these as powers of 1024), e.g. `50Gi`, `1073741824`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{} is not a byte count (e.g. 1073741824 or 1Gi)", echo(text)))?;
    let mult: u64 = match suffix {
        "" => 1,
        "K" | "Ki" => 1 << 10,
        "M" | "Mi" => 1 << 20,
        "G" | "Gi" => 1 << 30,
        "T" | "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{}: unknown unit {} (use K, M, G, T or Ki, Mi, Gi, Ti)",
                echo(text),
                echo(suffix)
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{} is too large", echo(text)))
}
