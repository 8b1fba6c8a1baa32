//! The `longname` of READDIR entries, formatted like a line of `ls -l`.
//!
//! OpenSSH's `sftp` prints it as it is for `ls -l`, and FileZilla and WinSCP parse it: they
//! read the entry type from its first character, so it must agree with the attributes.
//! Owner and group are numeric ids, and dates are in UTC.

use std::time::{SystemTime, UNIX_EPOCH};

use ferry_vfs::{FileKind, Metadata};

/// Files modified more than this long ago (or in the future) show the year instead of the
/// time of day, as `ls` does.
const RECENT_SECS: i64 = 182 * 24 * 3600;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Formats one entry, for example
/// `drwxr-xr-x    2 1000     1000         4096 Mar  5 14:07 photos`.
pub fn format(name: &str, meta: &Metadata, now: SystemTime) -> String {
    let modified = unix_secs(meta.modified);
    let age = unix_secs(now).saturating_sub(modified);
    let date = if (0..RECENT_SECS).contains(&age) {
        let (_, month, day, hour, minute) = civil(modified);
        format!("{} {day:>2} {hour:02}:{minute:02}", month_name(month))
    } else {
        let (year, month, day, _, _) = civil(modified);
        format!("{} {day:>2} {year:>5}", month_name(month))
    };
    format!(
        "{} {:>4} {:<8} {:<8} {:>12} {date} {name}",
        mode_string(meta),
        meta.nlink,
        meta.uid,
        meta.gid,
        meta.size,
    )
}

/// Returns the ten mode characters, such as `-rw-r--r--` or `lrwxrwxrwx`.
pub fn mode_string(meta: &Metadata) -> String {
    let mode = meta.mode;
    let kind = match meta.kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::File => '-',
        FileKind::Other => match mode & 0o170000 {
            0o010000 => 'p',
            0o020000 => 'c',
            0o060000 => 'b',
            0o140000 => 's',
            _ => '?',
        },
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    // (read bit, write bit, execute bit, special bit, special char when executable)
    let triads = [
        (0o400, 0o200, 0o100, 0o4000, 's'),
        (0o040, 0o020, 0o010, 0o2000, 's'),
        (0o004, 0o002, 0o001, 0o1000, 't'),
    ];
    for (read, write, exec, special, special_char) in triads {
        s.push(if mode & read != 0 { 'r' } else { '-' });
        s.push(if mode & write != 0 { 'w' } else { '-' });
        s.push(match (mode & exec != 0, mode & special != 0) {
            (true, true) => special_char,
            (false, true) => special_char.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn month_name(month: u32) -> &'static str {
    MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("???")
}

/// Returns seconds since the Unix epoch, negative before it.
fn unix_secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Converts seconds since the epoch to a UTC (year, month 1-12, day 1-31, hour, minute),
/// with the days-to-civil algorithm of the proleptic Gregorian calendar.
fn civil(secs: i64) -> (i64, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let hour = (of_day / 3600) as u32;
    let minute = (of_day % 3600 / 60) as u32;

    // Shift the epoch to 0000-03-01, so that leap days fall at the end of a year, then
    // split into 400-year eras of 146,097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day, hour, minute)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn meta(kind: FileKind, mode: u32, size: u64, modified_secs: u64) -> Metadata {
        Metadata {
            kind,
            size,
            mode,
            uid: 1000,
            gid: 100,
            nlink: 1,
            accessed: UNIX_EPOCH,
            modified: UNIX_EPOCH + Duration::from_secs(modified_secs),
        }
    }

    #[test]
    fn civil_known_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0));
        // 2000-02-29 12:34 UTC, a leap day in a century year divisible by 400.
        assert_eq!(civil(951_827_640), (2000, 2, 29, 12, 34));
        // 2024-12-31 23:59 UTC.
        assert_eq!(civil(1_735_689_540), (2024, 12, 31, 23, 59));
        // 1969-12-31 23:59 UTC, before the epoch.
        assert_eq!(civil(-60), (1969, 12, 31, 23, 59));
    }

    #[test]
    fn mode_strings() {
        let cases = [
            (FileKind::Dir, 0o040755, "drwxr-xr-x"),
            (FileKind::File, 0o100644, "-rw-r--r--"),
            (FileKind::Symlink, 0o120777, "lrwxrwxrwx"),
            (FileKind::File, 0o104755, "-rwsr-xr-x"),
            (FileKind::File, 0o102644, "-rw-r-Sr--"),
            (FileKind::Dir, 0o041777, "drwxrwxrwt"),
            (FileKind::Other, 0o010600, "prw-------"),
        ];
        for (kind, mode, expected) in cases {
            assert_eq!(mode_string(&meta(kind, mode, 0, 0)), expected, "{mode:o}");
        }
    }

    #[test]
    fn recent_file_shows_time() {
        let modified = 1_735_689_540; // 2024-12-31 23:59
        let now = UNIX_EPOCH + Duration::from_secs(modified + 3600);
        let line = format(
            "a b.txt",
            &meta(FileKind::File, 0o100644, 42, modified),
            now,
        );
        assert_eq!(
            line,
            "-rw-r--r--    1 1000     100                42 Dec 31 23:59 a b.txt"
        );
    }

    #[test]
    fn old_file_shows_year() {
        let now = UNIX_EPOCH + Duration::from_secs(1_735_689_540);
        let line = format("d", &meta(FileKind::Dir, 0o040755, 4096, 0), now);
        assert_eq!(
            line,
            "drwxr-xr-x    1 1000     100              4096 Jan  1  1970 d"
        );
    }

    #[test]
    fn future_file_shows_year() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let line = format("f", &meta(FileKind::File, 0o100600, 1, 1_735_689_540), now);
        assert!(line.contains("Dec 31  2024 f"), "{line}");
    }
}
