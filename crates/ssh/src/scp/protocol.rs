//! The records of the rcp protocol that `scp -t` and `scp -f` speak, parsed and encoded
//! without I/O.
//!
//! The source sends one line per record, and the sink responds to each record with one byte:
//! `\0` for success, or `\x01` (warning) or `\x02` (fatal error) followed by a message line.
//!
//! - `C<mode> <size> <name>`: a file of `size` bytes follows, then the source's own `\0`.
//! - `D<mode> 0 <name>`: a directory; its entries follow, up to the matching `E`.
//! - `E`: the end of the current directory.
//! - `T<mtime> <usec> <atime> <usec>`: times for the next `C` or `D` record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Maximum length of a record line, newline included, which also limits file names.
pub(crate) const MAX_RECORD_LEN: usize = 4096;

/// The byte that acknowledges a record or a file's data.
pub(crate) const OK: u8 = 0;
/// Starts a message about a failure that does not end the transfer.
pub(crate) const WARNING: u8 = 1;
/// Starts a message about a failure that ends the transfer.
pub(crate) const FATAL: u8 = 2;

/// The largest time a `T` record may carry, in seconds since the Unix epoch: the largest
/// that a file's `timespec` (signed 64-bit seconds) can hold.
const MAX_TIME_SECS: u64 = i64::MAX as u64;

/// Modification and access times from a `T` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Times {
    pub(crate) modified: SystemTime,
    pub(crate) accessed: SystemTime,
}

impl Times {
    /// Builds the times of a `T` record from seconds since the Unix epoch; `None` when either
    /// is too large for a file's time.
    pub(crate) fn from_secs(modified: u64, accessed: u64) -> Option<Times> {
        let time = |secs: u64| {
            if secs > MAX_TIME_SECS {
                return None;
            }
            UNIX_EPOCH.checked_add(Duration::from_secs(secs))
        };
        Some(Times {
            modified: time(modified)?,
            accessed: time(accessed)?,
        })
    }

    /// Returns the times in whole seconds since the Unix epoch, as a `T` record sends them.
    /// Times before the epoch are sent as 0.
    fn secs(&self) -> (u64, u64) {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        (secs(self.modified), secs(self.accessed))
    }
}

/// One record from the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    File {
        mode: u32,
        size: u64,
        name: String,
    },
    Dir {
        mode: u32,
        name: String,
    },
    End,
    Times(Times),
    /// A `\x01` message: the source could not send something and goes on.
    Warning(String),
    /// A `\x02` message: the source stops.
    Fatal(String),
}

impl Record {
    /// Parses one record line, without its trailing newline.
    pub(crate) fn parse(line: &[u8]) -> Result<Record, String> {
        let (&kind, rest) = line.split_first().ok_or("empty record")?;
        if kind == WARNING || kind == FATAL {
            let message = String::from_utf8_lossy(rest).into_owned();
            return Ok(if kind == WARNING {
                Record::Warning(message)
            } else {
                Record::Fatal(message)
            });
        }
        let rest = std::str::from_utf8(rest).map_err(|_| "record is not valid UTF-8")?;
        match kind {
            b'C' | b'D' => {
                let (mode, rest) = rest.split_at_checked(4).ok_or("record too short")?;
                let mode = parse_mode(mode)?;
                let rest = rest
                    .strip_prefix(' ')
                    .ok_or("expected a space after the mode")?;
                let (size, name) = rest.split_once(' ').ok_or("expected a size and a name")?;
                let size: u64 = size.parse().map_err(|_| format!("invalid size {size:?}"))?;
                check_name(name)?;
                let name = name.to_owned();
                if kind == b'C' {
                    Ok(Record::File { mode, size, name })
                } else {
                    Ok(Record::Dir { mode, name })
                }
            }
            b'E' if rest.is_empty() => Ok(Record::End),
            b'T' => {
                let fields: Vec<&str> = rest.split(' ').collect();
                let [modified, modified_usec, accessed, accessed_usec] = fields.as_slice() else {
                    return Err("a T record has four numbers".into());
                };
                let number = |text: &str| {
                    text.parse::<u64>()
                        .map_err(|_| format!("invalid time {text:?}"))
                };
                let (modified_secs, accessed_secs) = (number(modified)?, number(accessed)?);
                for usec in [modified_usec, accessed_usec] {
                    if number(usec)? > 999_999 {
                        return Err(format!("invalid microseconds {usec:?}"));
                    }
                }
                let times = Times::from_secs(modified_secs, accessed_secs)
                    .ok_or_else(|| format!("time out of range: {modified:?} or {accessed:?}"))?;
                Ok(Record::Times(times))
            }
            other => Err(format!("unknown record type {:?}", char::from(other))),
        }
    }
}

fn parse_mode(text: &str) -> Result<u32, String> {
    if text.len() != 4 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("invalid mode {text:?}"));
    }
    u32::from_str_radix(text, 8).map_err(|_| format!("invalid mode {text:?}"))
}

/// Rejects names that are empty, `.`, `..` or contain `/`, which would place a file outside
/// the directory being written.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!("unexpected file name {name:?}"));
    }
    Ok(())
}

pub(crate) fn file_record(mode: u32, size: u64, name: &str) -> String {
    format!("C{:04o} {size} {name}\n", mode & 0o7777)
}

pub(crate) fn dir_record(mode: u32, name: &str) -> String {
    format!("D{:04o} 0 {name}\n", mode & 0o7777)
}

pub(crate) fn times_record(times: Times) -> String {
    let (modified, accessed) = times.secs();
    format!("T{modified} 0 {accessed} 0\n")
}

pub(crate) const END_RECORD: &str = "E\n";

/// Encodes a warning message line, as sent in place of an acknowledgement.
pub(crate) fn warning(message: &str) -> Vec<u8> {
    let mut line = vec![WARNING];
    line.extend(message.replace('\n', " ").into_bytes());
    line.push(b'\n');
    line
}

/// Encodes a fatal error message line.
pub(crate) fn fatal(message: &str) -> Vec<u8> {
    let mut line = warning(message);
    if let Some(first) = line.first_mut() {
        *first = FATAL;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_record_parsed() {
        assert_eq!(
            Record::parse(b"C0644 1234 my file.txt"),
            Ok(Record::File {
                mode: 0o644,
                size: 1234,
                name: "my file.txt".into()
            })
        );
    }

    #[test]
    fn dir_record_parsed() {
        assert_eq!(
            Record::parse(b"D0755 0 sub"),
            Ok(Record::Dir {
                mode: 0o755,
                name: "sub".into()
            })
        );
    }

    #[test]
    fn times_record_parsed() {
        assert_eq!(
            Record::parse(b"T1700000000 0 1600000000 0"),
            Ok(Record::Times(
                Times::from_secs(1_700_000_000, 1_600_000_000).unwrap()
            ))
        );
    }

    #[test]
    fn out_of_range_times_rejected() {
        let max = i64::MAX as u64;
        for line in [
            "T18446744073709551615 0 1 0".to_owned(),
            "T1 0 18446744073709551615 0".to_owned(),
            format!("T{} 0 1 0", max + 1),
            "T18446744073709551616 0 1 0".to_owned(),
        ] {
            let parsed = Record::parse(line.as_bytes());
            assert!(parsed.is_err(), "{line}: {parsed:?}");
        }
    }

    #[test]
    fn largest_time_accepted() {
        let line = format!("T{} 0 0 0", i64::MAX);
        assert!(matches!(
            Record::parse(line.as_bytes()),
            Ok(Record::Times(_))
        ));
    }

    #[test]
    fn messages_parsed() {
        assert_eq!(
            Record::parse(b"\x01scp: a: No such file"),
            Ok(Record::Warning("scp: a: No such file".into()))
        );
        assert_eq!(
            Record::parse(b"\x02fatal"),
            Ok(Record::Fatal("fatal".into()))
        );
    }

    #[test]
    fn end_record_parsed() {
        assert_eq!(Record::parse(b"E"), Ok(Record::End));
    }

    #[test]
    fn bad_records_rejected() {
        for line in [
            &b""[..],
            b"C644 1 a",
            b"C0648 1 a",
            b"C0644 -1 a",
            b"C0644 1",
            b"C0644 1 ",
            b"C0644 1 ..",
            b"C0644 1 .",
            b"C0644 1 a/b",
            b"D0755 0 ../up",
            b"T1 2 3",
            b"T1 1000000 3 0",
            b"Ex",
            b"X",
            b"C0644 1 \xff",
        ] {
            assert!(Record::parse(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn records_encoded() {
        assert_eq!(file_record(0o100644, 5, "a b"), "C0644 5 a b\n");
        assert_eq!(dir_record(0o40755, "d"), "D0755 0 d\n");
        assert_eq!(times_record(Times::from_secs(2, 1).unwrap()), "T2 0 1 0\n");
        assert_eq!(warning("x\ny"), b"\x01x y\n");
        assert_eq!(fatal("z"), b"\x02z\n");
    }

    #[test]
    fn encoded_records_parse_back() {
        let line = file_record(0o600, 42, "name with spaces");
        let parsed = Record::parse(line.trim_end_matches('\n').as_bytes());
        assert_eq!(
            parsed,
            Ok(Record::File {
                mode: 0o600,
                size: 42,
                name: "name with spaces".into()
            })
        );
    }
}
