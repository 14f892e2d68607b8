//! The flag and environment-variable reference, `docs/cli.md`, rendered from the
//! clap definition in `cli.rs` (every subcommand, recursively), and the tests
//! that keep the checked-in file equal to it: a flag added without
//! regenerating the file fails `cargo test --workspace`, and so CI.
//!
//! Written over clap's own introspection (`CommandFactory`) rather than with
//! `clap-markdown`, whose output has no environment variables.
//!
//! Regenerate with `KINDE_METER_UPDATE_DOCS=1 cargo test -p kinde-meter cli_reference`.

use std::{collections::BTreeMap, fmt::Write as _};

use clap::{Arg, ArgAction, Command, CommandFactory};

use crate::cli::Cli;

/// The command that rewrites `docs/cli.md`.
const REGENERATE: &str = "KINDE_METER_UPDATE_DOCS=1 cargo test -p kinde-meter cli_reference";

/// Arguments every command has, described once at the top instead of in each table.
const BUILT_IN_ARGS: [&str; 2] = ["help", "version"];

/// `docs/cli.md` as the current `Cli` defines it.
pub fn render() -> String {
    let mut root = Cli::command();
    root.build();
    let commands = walk(&root);

    let mut out = String::new();
    out.push_str(
        "# Command-line reference\n\n\
         <!-- Generated from crates/kinde-meter/src/cli.rs by crates/kinde-meter/src/cli_reference.rs: \
         do not edit by hand. -->\n\n",
    );
    let _ = writeln!(
        out,
        "Every command and flag of `kinde-meter`, with its environment variable and \
         default, generated from the command's own definition. `cargo test` fails when this \
         file is out of date; regenerate it with\n\n    {REGENERATE}\n"
    );
    out.push_str(
        "Every command also takes `-h`/`--help` (`--help` prints the longer text) and \
         `-V`/`--version`. A flag's environment variable is read when the flag is not given; \
         for a switch (a flag without a value) the variable is `true` or `false`. Where a \
         flag may be repeated, its variable takes the values comma-separated. The \
         [environment variables](#environment-variables) are also listed together at the \
         end.\n\n",
    );

    out.push_str("## Commands\n\n");
    for (path, command) in &commands {
        let depth = path.len().saturating_sub(1);
        let about = first_line(command);
        let _ = writeln!(
            out,
            "{}- [`{}`](#{}){}",
            "  ".repeat(depth),
            path.join(" "),
            anchor(&path.join(" ")),
            if about.is_empty() {
                String::new()
            } else {
                format!(": {about}")
            }
        );
    }
    out.push('\n');

    for (path, command) in &commands {
        render_command(&mut out, path, command);
    }
    render_env_index(&mut out, &commands);
    out
}

/// The command and its subcommands, depth first, each with its path from the root
/// (`["kinde-meter", "agreements", "create"]`); clap's `help` subcommands left out.
fn walk(root: &Command) -> Vec<(Vec<String>, &Command)> {
    fn visit<'a>(
        path: Vec<String>,
        command: &'a Command,
        out: &mut Vec<(Vec<String>, &'a Command)>,
    ) {
        let subcommands: Vec<&Command> = command
            .get_subcommands()
            .filter(|sub| sub.get_name() != "help" && !sub.is_hide_set())
            .collect();
        out.push((path.clone(), command));
        for sub in subcommands {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_owned());
            visit(sub_path, sub, out);
        }
    }
    let mut out = Vec::new();
    visit(vec![root.get_name().to_owned()], root, &mut out);
    out
}

/// One command's section: its description, usage, subcommands and arguments.
fn render_command(out: &mut String, path: &[String], command: &Command) {
    let name = path.join(" ");
    let _ = writeln!(out, "## {name}\n");
    if let Some(about) = command.get_long_about().or(command.get_about()) {
        let _ = writeln!(out, "{}\n", about.to_string().trim());
    }
    let usage = command.clone().render_usage().to_string();
    for line in usage.trim().trim_start_matches("Usage:").lines() {
        let _ = writeln!(out, "    {}", line.trim());
    }
    out.push('\n');
    if let Some(after) = command.get_after_long_help().or(command.get_after_help()) {
        let _ = writeln!(out, "{}\n", after.to_string().trim());
    }

    let subcommands: Vec<&Command> = command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help" && !sub.is_hide_set())
        .collect();
    if !subcommands.is_empty() {
        out.push_str("Subcommands:\n\n");
        for sub in subcommands {
            let sub_name = format!("{name} {}", sub.get_name());
            let _ = writeln!(
                out,
                "- [`{}`](#{}): {}",
                sub.get_name(),
                anchor(&sub_name),
                first_line(sub)
            );
        }
        out.push('\n');
    }

    let args: Vec<&Arg> = documented_args(command).collect();
    if args.is_empty() {
        return;
    }
    out.push_str("| Argument | Environment variable | Default | Description |\n");
    out.push_str("|---|---|---|---|\n");
    for arg in args {
        let env = arg
            .get_env()
            .map(|env| format!("`{}`", env.to_string_lossy()))
            .unwrap_or_default();
        let default = if takes_value(arg) {
            let values: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| format!("`{}`", v.to_string_lossy()))
                .collect();
            values.join(", ")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            cell(&format!("`{}`", signature(arg))),
            cell(&env),
            cell(&default),
            cell(&description(arg))
        );
    }
    out.push('\n');
}

/// The closing index: each environment variable with the flags it stands for
/// and the commands that take them.
fn render_env_index(out: &mut String, commands: &[(Vec<String>, &Command)]) {
    // variable -> flag -> links to the commands taking it, in the commands' order
    let mut by_env: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (path, command) in commands {
        for arg in documented_args(command) {
            if let Some(env) = arg.get_env() {
                by_env
                    .entry(env.to_string_lossy().into_owned())
                    .or_default()
                    .entry(signature_flag(arg))
                    .or_default()
                    .push(format!(
                        "[{}](#{})",
                        path[1..].join(" "),
                        anchor(&path.join(" "))
                    ));
            }
        }
    }
    out.push_str("## Environment variables\n\n");
    out.push_str("| Variable | Flag and commands |\n|---|---|\n");
    for (env, flags) in by_env {
        let flags: Vec<String> = flags
            .into_iter()
            .map(|(flag, commands)| format!("`{flag}` of {}", commands.join(", ")))
            .collect();
        let _ = writeln!(out, "| `{env}` | {} |", flags.join("; "));
    }
}

/// A command's own arguments, without `--help`/`--version` and hidden ones.
fn documented_args(command: &Command) -> impl Iterator<Item = &Arg> {
    command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set() && !BUILT_IN_ARGS.contains(&arg.get_id().as_str()))
}

/// Whether the argument takes a value (a switch does not).
fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

/// `-s, --long <VALUE>`, `--switch` or `<POSITIONAL>`, as `--help` writes it.
fn signature(arg: &Arg) -> String {
    let value = value_names(arg);
    if arg.is_positional() {
        return value;
    }
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(format!("-{short}"));
    }
    if let Some(long) = arg.get_long() {
        names.push(format!("--{long}"));
    }
    let mut signature = names.join(", ");
    if takes_value(arg) {
        signature.push(' ');
        signature.push_str(&value);
    }
    signature
}

/// The flag alone (`--listen`, `<CLIENT_ID>`), for the index.
fn signature_flag(arg: &Arg) -> String {
    match arg.get_long() {
        Some(long) => format!("--{long}"),
        None => value_names(arg),
    }
}

/// `<VALUE>` from the value names, or the argument's id upper-cased as clap does.
fn value_names(arg: &Arg) -> String {
    match arg.get_value_names() {
        Some(names) => names
            .iter()
            .map(|n| format!("<{n}>"))
            .collect::<Vec<_>>()
            .join(" "),
        None => format!("<{}>", arg.get_id().as_str().to_uppercase()),
    }
}

/// The help text, with what the table has no column for: required,
/// repeatable, the possible values.
fn description(arg: &Arg) -> String {
    let mut parts = Vec::new();
    if arg.is_required_set() {
        parts.push("**Required.**".to_owned());
    }
    if let Some(help) = arg.get_long_help().or(arg.get_help()) {
        parts.push(sentence(help.to_string().trim()));
    }
    if matches!(arg.get_action(), ArgAction::Append) {
        parts.push(match arg.get_value_delimiter() {
            Some(delimiter) => format!("Repeatable, or `{delimiter}`-separated."),
            None => "Repeatable.".to_owned(),
        });
    }
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|value| !value.is_hide_set())
        .map(|value| match value.get_help() {
            Some(help) => format!("`{}`: {}", value.get_name(), help.to_string().trim()),
            None => format!("`{}`", value.get_name()),
        })
        .collect();
    if takes_value(arg) && !possible.is_empty() {
        parts.push(format!("Values: {}.", possible.join("; ")));
    }
    parts.join(" ")
}

/// The text with a full stop at its end (clap drops the one of a one-line doc
/// comment), so that what follows it in the cell reads as a new sentence.
fn sentence(text: &str) -> String {
    match text.chars().last() {
        None => String::new(),
        Some('.' | '?' | '!' | ':') => text.to_owned(),
        Some(_) => format!("{text}."),
    }
}

/// The first line of a command's about text, for lists.
fn first_line(command: &Command) -> String {
    command
        .get_about()
        .map(|about| {
            about
                .to_string()
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// A Markdown table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    paragraphs.join("<br><br>").replace('|', "\\|")
}

/// The anchor GitHub gives a heading: lower case, spaces as `-`, punctuation
/// other than `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn docs_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md")
    }

    /// The checked-in reference is what the current definition renders;
    /// `KINDE_METER_UPDATE_DOCS=1` rewrites it instead.
    #[test]
    fn docs_cli_md_is_current() {
        let rendered = render();
        let path = docs_path();
        if std::env::var_os("KINDE_METER_UPDATE_DOCS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &rendered).expect("write docs/cli.md");
            return;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != rendered {
            let first_difference = on_disk
                .lines()
                .zip(rendered.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| on_disk.lines().count().min(rendered.lines().count()));
            panic!(
                "docs/cli.md is out of date with crates/kinde-meter/src/cli.rs (first \
                 difference at line {}: on disk {:?}, rendered {:?}). Run `{REGENERATE}` \
                 and commit docs/cli.md.",
                first_difference + 1,
                on_disk
                    .lines()
                    .nth(first_difference)
                    .unwrap_or("<end of file>"),
                rendered
                    .lines()
                    .nth(first_difference)
                    .unwrap_or("<end of file>"),
            );
        }
    }

    fn subcommand<'a>(root: &'a Command, name: &str) -> &'a Command {
        root.find_subcommand(name)
            .unwrap_or_else(|| panic!("no subcommand {name}"))
    }

    /// docs/operations.md#starting: every flag of `serve` is also the
    /// environment variable `KINDE_METER_<FLAG>`.
    #[test]
    fn every_serve_flag_has_its_environment_variable() {
        let mut root = Cli::command();
        root.build();
        let serve = subcommand(&root, "serve");
        let args: Vec<&Arg> = documented_args(serve).collect();
        assert!(args.len() > 20, "serve has {} flags", args.len());
        for arg in args {
            let long = arg.get_long().expect("serve takes flags only");
            let expected = format!("KINDE_METER_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(expected),
                "serve --{long}: add `env = \"KINDE_METER_…\"` to it in cli.rs"
            );
        }
    }

    /// The flags that say where a command acts and as whom have their
    /// environment variable in every command that takes them, so a shell can
    /// set them once (docs/operations.md#starting).
    #[test]
    fn target_flags_have_environment_variables_in_every_command() {
        const TARGET_FLAGS: [&str; 7] = [
            "data-dir",
            "database-url",
            "server",
            "token",
            "client-id",
            "client-secret",
            "token-audience",
        ];
        let mut root = Cli::command();
        root.build();
        let mut checked = 0;
        for (path, command) in walk(&root) {
            for arg in documented_args(command) {
                let Some(long) = arg.get_long() else { continue };
                if TARGET_FLAGS.contains(&long) {
                    checked += 1;
                    let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                    assert!(
                        env.as_deref()
                            .is_some_and(|e| e.starts_with("KINDE_METER_")),
                        "{} --{long} has no KINDE_METER_ environment variable",
                        path.join(" ")
                    );
                }
            }
        }
        assert!(checked > 30, "only {checked} target flags found");
    }

    #[test]
    fn anchors_are_githubs() {
        assert_eq!(
            anchor("kinde-meter agreements create"),
            "kinde-meter-agreements-create"
        );
        assert_eq!(anchor("Environment variables"), "environment-variables");
    }

    #[test]
    fn help_texts_end_as_sentences() {
        assert_eq!(sentence("Address to listen on"), "Address to listen on.");
        assert_eq!(sentence("Lifetime in seconds."), "Lifetime in seconds.");
        assert_eq!(sentence(""), "");
    }

    #[test]
    fn cells_stay_on_one_line_with_pipes_escaped() {
        assert_eq!(cell("a\nb | c\n\nd"), "a b \\| c<br><br>d");
    }
}
