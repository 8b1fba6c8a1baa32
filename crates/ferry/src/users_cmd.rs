//! `ferry users`: edit the users file in place, keeping its comments and layout.
//!
//! Every change is validated as the server would load it, written to a temporary file in the
//! same folder and renamed over the original, so a reader never sees half a file. A running
//! server picks the change up on SIGHUP.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user. Without --password-stdin or --key the user cannot log in until
    /// `ferry users passwd` sets a password.
    Add {
        name: String,
        /// Home directory; default: data/NAME in the state directory.
        #[arg(long)]
        home: Option<PathBuf>,
        /// Read the password from stdin (one line).
        #[arg(long)]
        password_stdin: bool,
        /// An OpenSSH public key file (such as ~/.ssh/id_ed25519.pub) to authorize.
        #[arg(long)]
        key: Vec<PathBuf>,
    },
    /// Set a user's password, read from stdin (prompted without echo on a terminal).
    Passwd { name: String },
    /// List the users with their home directories and login methods.
    List,
    /// Remove a user; their files stay on disk.
    Remove { name: String },
}

/// A running server reads the users file at start and on SIGHUP only.
const RELOAD_HINT: &str = "a running server applies it after SIGHUP (kill -HUP <pid>)";

pub fn run(command: UsersCommand, config: &crate::config::Config) -> anyhow::Result<()> {
    let users_file = config.data_provider.users_file.as_path();
    match command {
        UsersCommand::List => list(users_file),
        UsersCommand::Add {
            name,
            home,
            password_stdin,
            key,
        } => {
            let mut doc = read(users_file)?;
            if find(&doc, &name).is_some() {
                bail!("user {name:?} already exists in {}", users_file.display());
            }
            let mut table = Table::new();
            table["username"] = value(name.as_str());
            if password_stdin {
                table["password"] = value(hash(&read_password(false)?)?);
            }
            let mut keys = Array::new();
            for path in &key {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read public key file {}", path.display()))?;
                if text.contains("PRIVATE KEY") {
                    bail!(
                        "{} is a private key; give the public key instead (usually the same name with .pub)",
                        path.display()
                    );
                }
                for line in text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    keys.push(line);
                }
            }
            table["public_keys"] = value(keys);
            let home = home.unwrap_or_else(|| config.common.state_dir.join("data").join(&name));
            table["home_dir"] = value(home.to_string_lossy().as_ref());
            users_array(&mut doc)?.push(table);
            write(users_file, &doc)?;
            eprintln!(
                "ferry: user {name:?} added to {}; {RELOAD_HINT}",
                users_file.display()
            );
            Ok(())
        }
        UsersCommand::Passwd { name } => {
            let mut doc = read(users_file)?;
            let index = find(&doc, &name)
                .with_context(|| format!("no user {name:?} in {}", users_file.display()))?;
            let password = hash(&read_password(true)?)?;
            let table = users_array(&mut doc)?
                .get_mut(index)
                .with_context(|| format!("no user {name:?}"))?;
            table["password"] = value(password);
            write(users_file, &doc)?;
            eprintln!("ferry: password of {name:?} changed; {RELOAD_HINT}");
            Ok(())
        }
        UsersCommand::Remove { name } => {
            let mut doc = read(users_file)?;
            let index = find(&doc, &name)
                .with_context(|| format!("no user {name:?} in {}", users_file.display()))?;
            remove_keeping_file_comments(users_array(&mut doc)?, index);
            write(users_file, &doc)?;
            eprintln!(
                "ferry: user {name:?} removed; their files were left in place; {RELOAD_HINT}"
            );
            Ok(())
        }
    }
}

fn read(path: &Path) -> anyhow::Result<DocumentMut> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read users file {}", path.display()));
        }
    };
    text.parse::<DocumentMut>()
        .with_context(|| format!("invalid users file {}", path.display()))
}

fn users_array(doc: &mut DocumentMut) -> anyhow::Result<&mut ArrayOfTables> {
    let item = doc
        .entry("users")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    item.as_array_of_tables_mut()
        .context("`users` in the users file is not an array of tables")
}

/// Removes a user table. Comments above its header that a blank line separates from it
/// describe the file rather than this user, so they move to the table that follows.
fn remove_keeping_file_comments(users: &mut ArrayOfTables, index: usize) {
    let prefix = users
        .get(index)
        .and_then(|table| table.decor().prefix())
        .and_then(|raw| raw.as_str())
        .unwrap_or("")
        .to_owned();
    users.remove(index);
    let Some(split) = prefix.rfind("\n\n") else {
        return;
    };
    let kept = &prefix[..split + 2];
    if kept.trim().is_empty() {
        return;
    }
    if let Some(next) = users.get_mut(index) {
        let own = next
            .decor()
            .prefix()
            .and_then(|raw| raw.as_str())
            .unwrap_or("")
            .to_owned();
        next.decor_mut().set_prefix(format!("{kept}{own}"));
    }
}

fn find(doc: &DocumentMut, name: &str) -> Option<usize> {
    doc.get("users")?
        .as_array_of_tables()?
        .iter()
        .position(|table| table.get("username").and_then(Item::as_str) == Some(name))
}

/// Validates the new text as the server would load it, then replaces the file atomically.
fn write(path: &Path, doc: &DocumentMut) -> anyhow::Result<()> {
    let text = doc.to_string();
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Err(problems) = ferry_users::check_users_text(&text, base) {
        bail!(
            "the change would make the users file invalid:\n  {}",
            problems.join("\n  ")
        );
    }
    let mut temp = tempfile::NamedTempFile::new_in(base)
        .with_context(|| format!("cannot create a temporary file in {}", base.display()))?;
    temp.write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        temp.as_file().set_permissions(meta.permissions())?;
    }
    temp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

fn list(path: &Path) -> anyhow::Result<()> {
    let doc = read(path)?;
    let Some(users) = doc.get("users").and_then(Item::as_array_of_tables) else {
        return Ok(());
    };
    for table in users.iter() {
        let name = table.get("username").and_then(Item::as_str).unwrap_or("?");
        let home = table.get("home_dir").and_then(Item::as_str).unwrap_or("?");
        let has_password = table
            .get("password")
            .and_then(Item::as_str)
            .is_some_and(|p| !p.is_empty());
        let keys = table
            .get("public_keys")
            .and_then(Item::as_array)
            .map_or(0, Array::len);
        let status = table
            .get("status")
            .and_then(Item::as_str)
            .unwrap_or("enabled");
        println!(
            "{name}\thome={home}\tpassword={}\tkeys={keys}\tstatus={status}",
            if has_password { "yes" } else { "no" }
        );
    }
    Ok(())
}

/// Reads a password: without echo from a terminal (asking twice when `confirm`), or one
/// line from stdin otherwise.
fn read_password(confirm: bool) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        if confirm && rpassword::prompt_password("Repeat password: ")? != first {
            bail!("the passwords do not match");
        }
        return non_empty(first);
    }
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let line = input.lines().next().unwrap_or("").to_owned();
    non_empty(line)
}

fn non_empty(password: String) -> anyhow::Result<String> {
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}

fn hash(password: &str) -> anyhow::Result<String> {
    ferry_users::hash_password(password).map_err(anyhow::Error::msg)
}
