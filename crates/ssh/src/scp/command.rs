//! The `scp -t` and `scp -f` command lines that clients send in an `exec` request.
//!
//! Clients expect a shell on the server to split the command line, so file names arrive
//! quoted or escaped the way a POSIX shell reads them. No shell runs here: the line is split
//! into words by the same quoting rules, and a line that would need more than word splitting
//! (pipes, redirections, command separators, substitutions) is rejected.

use std::fmt;

/// Which way the files go, seen from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// `scp -t`: the client uploads into the target path.
    Upload,
    /// `scp -f`: the client downloads the named paths.
    Download,
}

/// A path argument as the shell would have seen it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathArg {
    pub(crate) text: String,
    /// Whether the word contained an unquoted `*`, `?` or `[`, which a shell expands.
    pub(crate) has_wildcards: bool,
}

/// A parsed SCP command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Command {
    pub(crate) direction: Direction,
    /// `-r`: directories are copied with their contents.
    pub(crate) recursive: bool,
    /// `-p`: modification times, access times and modes are kept.
    pub(crate) preserve: bool,
    /// `-d`: the upload target must be a directory.
    pub(crate) target_must_be_dir: bool,
    pub(crate) paths: Vec<PathArg>,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = match self.direction {
            Direction::Upload => "-t",
            Direction::Download => "-f",
        };
        write!(f, "scp {flag}")?;
        if self.recursive {
            f.write_str(" -r")?;
        }
        if self.preserve {
            f.write_str(" -p")?;
        }
        if self.target_must_be_dir {
            f.write_str(" -d")?;
        }
        for path in &self.paths {
            write!(f, " {:?}", path.text)?;
        }
        Ok(())
    }
}

impl Command {
    /// Parses an `exec` command line. Returns `Ok(None)` when the program is not `scp`, and
    /// an error naming the problem when it is `scp` with options or paths this server does
    /// not accept.
    pub(crate) fn parse(line: &str) -> Result<Option<Command>, String> {
        let words = split_words(line)?;
        let mut words = words.into_iter();
        let Some(program) = words.next() else {
            return Ok(None);
        };
        if program.text != "scp" && !program.text.ends_with("/scp") {
            return Ok(None);
        }

        let mut direction = None;
        let mut recursive = false;
        let mut preserve = false;
        let mut target_must_be_dir = false;
        let mut paths = Vec::new();
        let mut options_done = false;
        for word in words {
            if !options_done && word.text == "--" {
                options_done = true;
                continue;
            }
            if !options_done && word.text.starts_with('-') && word.text.len() > 1 {
                for letter in word.text.chars().skip(1) {
                    match letter {
                        't' | 'f' => {
                            let wanted = if letter == 't' {
                                Direction::Upload
                            } else {
                                Direction::Download
                            };
                            if direction.is_some_and(|d| d != wanted) {
                                return Err("both -t and -f given".into());
                            }
                            direction = Some(wanted);
                        }
                        'r' => recursive = true,
                        'p' => preserve = true,
                        'd' => target_must_be_dir = true,
                        // Verbose output and quiet mode change nothing on the server side.
                        'v' | 'q' => {}
                        other => return Err(format!("unsupported option -{other}")),
                    }
                }
                continue;
            }
            options_done = true;
            paths.push(word);
        }

        let Some(direction) = direction else {
            return Err("neither -t (upload) nor -f (download) given".into());
        };
        if paths.is_empty() {
            return Err("no path given".into());
        }
        if direction == Direction::Upload {
            if paths.len() > 1 {
                return Err(format!(
                    "an upload takes one target path, got {}",
                    paths.len()
                ));
            }
            if paths.iter().any(|p| p.has_wildcards) {
                return Err("wildcards are not allowed in an upload target".into());
            }
        }
        Ok(Some(Command {
            direction,
            recursive,
            preserve,
            target_must_be_dir,
            paths,
        }))
    }
}

/// Splits a command line into words as a POSIX shell does for simple commands: single
/// quotes keep everything, double quotes keep everything but `\"`, `\\`, `\$` and `` \` ``
/// escapes, and a backslash outside quotes escapes the next character.
fn split_words(line: &str) -> Result<Vec<PathArg>, String> {
    let mut words = Vec::new();
    let mut current: Option<PathArg> = None;
    let mut chars = line.chars().peekable();

    fn word(current: &mut Option<PathArg>) -> &mut PathArg {
        current.get_or_insert_with(|| PathArg {
            text: String::new(),
            has_wildcards: false,
        })
    }

    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(done) = current.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let word = word(&mut current);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.text.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                let word = word(&mut current);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.text.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.text.push('\\');
                                word.text.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some('$' | '`') => {
                            return Err("substitutions are not supported".into());
                        }
                        Some(c) => word.text.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => word(&mut current).text.push(c),
                None => return Err("trailing backslash".into()),
            },
            ';' | '|' | '&' | '<' | '>' | '(' | ')' | '`' | '$' => {
                return Err(format!(
                    "unquoted {c:?}: only one scp command with plain arguments is accepted"
                ));
            }
            '*' | '?' | '[' => {
                let word = word(&mut current);
                word.text.push(c);
                word.has_wildcards = true;
            }
            c => word(&mut current).text.push(c),
        }
    }
    if let Some(done) = current {
        words.push(done);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Command {
        Command::parse(line).unwrap().unwrap()
    }

    fn texts(command: &Command) -> Vec<&str> {
        command.paths.iter().map(|p| p.text.as_str()).collect()
    }

    #[test]
    fn upload_with_flags() {
        let command = parse("scp -v -r -p -d -t -- /data/in");
        assert_eq!(command.direction, Direction::Upload);
        assert!(command.recursive);
        assert!(command.preserve);
        assert!(command.target_must_be_dir);
        assert_eq!(texts(&command), ["/data/in"]);
    }

    #[test]
    fn combined_flags() {
        let command = parse("/usr/bin/scp -prf a b");
        assert_eq!(command.direction, Direction::Download);
        assert!(command.recursive && command.preserve);
        assert_eq!(texts(&command), ["a", "b"]);
    }

    #[test]
    fn quoted_names() {
        let command = parse(r#"scp -f 'it''s here' "dq \"x\"" back\ slash"#);
        assert_eq!(texts(&command), ["its here", "dq \"x\"", "back slash"]);
    }

    #[test]
    fn path_after_double_dash_may_start_with_dash() {
        let command = parse("scp -t -- -odd");
        assert_eq!(texts(&command), ["-odd"]);
    }

    #[test]
    fn wildcards_marked_when_unquoted() {
        let command = parse("scp -f dir/*.txt 'lit*'");
        assert!(command.paths[0].has_wildcards);
        assert!(!command.paths[1].has_wildcards);
    }

    #[test]
    fn other_programs_ignored() {
        assert_eq!(Command::parse("ls -l").unwrap(), None);
        assert_eq!(Command::parse("").unwrap(), None);
        assert_eq!(Command::parse("scpx -t .").unwrap(), None);
    }

    #[test]
    fn invalid_lines_rejected() {
        for line in [
            "scp",
            "scp -t",
            "scp -x -t .",
            "scp -t -f .",
            "scp -t a b",
            "scp -t a; rm -rf /",
            "scp -f a | cat",
            "scp -f \"$(id)\"",
            "scp -f 'open",
            "scp -t dir/*",
        ] {
            assert!(Command::parse(line).is_err(), "{line}");
        }
    }
}
