//! `ferry`: the command line. It parses arguments, shows progress and
//! prints results; the work happens in the library crates. Each command
//! lives in its own module under `commands/` and returns a typed result
//! that `output` renders as text or, with `--json`, as JSON
//! (`protocol/cli-json.md`).

// Doc comments here are clap help text (`owner/name[@rev]`), not rustdoc.
#![allow(rustdoc::broken_intra_doc_links)]

mod commands;
mod config;
mod exit;
mod net;
mod output;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::commands::*;
use crate::output::{finish, ErrorReport};

#[derive(Parser)]
#[command(name = "ferry", version, about = "Stores and moves large ML artifacts by content-defined chunks", after_help = EXAMPLES)]
struct Cli {
    /// The store directory (default: FERRY_STORE, else a per-user data directory).
    #[arg(long, global = true, env = "FERRY_STORE")]
    store: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars and no notes on stderr: only results, warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log what the command does on stderr (-vv: in detail; FERRY_LOG=<filter> overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// The configuration file: remotes, the author to record, and serve's
    /// settings in [serve] (default ~/.config/ferry/config.toml).
    #[arg(long, global = true, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  ferry --store ./store init
  ferry --store ./store commit org/llama-ft ./checkpoint-1000 -m \"step 1000\"
  ferry --store ./store log org/llama-ft
  ferry --store ./store export org/llama-ft@main ./out
  ferry --store /srv/hub serve --listen 0.0.0.0:4433 --http 0.0.0.0:8080
  FERRY_TOKEN=fy_... ferry --store ./store push hub.example:4433 org/llama-ft
  FERRY_TOKEN=fy_... ferry upload hub.example:4433 org/llama-ft ./checkpoint-2000 -m \"step 2000\"
  FERRY_TOKEN=fy_... ferry download hub.example:4433 org/llama-ft ./llama-ft
  ferry remote add eu hub-eu.example:4433 && ferry login eu   # then: ferry download eu org/llama-ft ./llama-ft
  ferry tag create org/llama-ft@main v1.0 --hub eu
  ferry forget org/llama-ft --keep-last 5 --keep-daily 7 --hub eu --dry-run
  ferry --config /etc/ferry/hub.toml serve                  # every serve flag in [serve]
  ferry completions bash > /etc/bash_completion.d/ferry

Exit codes: 0 success, 1 failure, 2 usage, 3 conflict, 4 not found or
forbidden, 5 hub unreachable or busy (after retries), 6 data fails
verification.";

#[derive(Subcommand)]
enum Command {
    /// Create an empty store.
    Init(init::BackendArgs),
    /// Make a new store directory from a bucket alone (the directory of a
    /// store on a bucket was lost).
    Rebuild(init::BackendArgs),
    /// Record the files under a directory as a new revision of a repository.
    Commit(commit::Args),
    /// Show the history of a branch.
    Log(log::Args),
    /// List the files of a revision.
    Ls(ls::Args),
    /// Write every file of a revision into a directory.
    Export(export::Args),
    /// Write one file, or a byte range of it, to stdout: from the local
    /// store, or with --hub straight from a hub.
    Cat(cat::Args),
    /// Run a hub: serve this store over QUIC and TLS-over-TCP on one port.
    Serve(Box<serve::Args>),
    /// Copy the branches of one hub's repositories to another hub, moving
    /// only what the destination lacks; revisions keep their ids.
    Mirror(mirror::Args),
    /// Send a local branch to a hub (only what the hub lacks).
    Push(transfer::PushArgs),
    /// Fetch a hub's branch into the local store (only what is missing locally).
    Pull(transfer::PullArgs),
    /// Send a directory to a hub as a new revision of a branch, with no
    /// local store: only what the hub lacks is sent, read back from the files.
    Upload(transfer::UploadArgs),
    /// Write a revision's files from a hub into a directory, with no local
    /// store: chunks already on disk (an older revision there, or --seed)
    /// are copied, not fetched.
    Download(transfer::DownloadArgs),
    /// Name hubs (in ~/.config/ferry/config.toml, or FERRY_CONFIG), so that
    /// commands take a name instead of host:port.
    Remote {
        #[command(subcommand)]
        action: remote::RemoteAction,
    },
    /// Check a token against a hub and save it for that remote (mode 0600).
    Login(remote::LoginArgs),
    /// Delete a remote's saved token.
    Logout(remote::LogoutArgs),
    /// Manage the hub's access tokens (works while the hub runs).
    Token {
        #[command(subcommand)]
        action: access::TokenAction,
    },
    /// Make repositories readable without a token, or private again.
    Visibility(access::VisibilityArgs),
    /// Show what the store holds and how much deduplication saves.
    Stats,
    /// Re-hash everything and report missing or corrupt data.
    Fsck,
    /// Reclaim chunks, trees and revisions no branch reaches.
    Gc,
    /// List repositories.
    Repos,
    /// Manage branches.
    Branch {
        #[command(subcommand)]
        action: branch::BranchAction,
    },
    /// Manage tags: names that pin a revision (locally or on a hub).
    Tag(tag::Args),
    /// Delete a repository (locally or on a hub).
    Repo {
        #[command(subcommand)]
        action: repos::RepoAction,
    },
    /// Retention: forget the revisions no --keep rule keeps (their files
    /// go at the next gc; the history stays), locally or on a hub.
    Forget(forget::Args),
    /// Show the hub's audit log: who moved or deleted which branch, tag or
    /// repository, from where and when.
    Audit(audit::Args),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (ferry.1 and one per command) into a directory.
    Manpages {
        /// Where to write them.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("ferry: error: {e:#}");
            return exit::of(&e);
        }
    };
    let json = cli.json;
    output::set_quiet(cli.quiet);
    // `serve` sets up its own logging (info by default).
    if cli.verbose > 0 && !matches!(cli.command, Command::Serve(_)) {
        output::start_logging(output::LogFormat::Text, if cli.verbose == 1 { "info" } else { "debug" });
    }
    // The crash tests stop a gc at a named step.
    if let Ok(point) = std::env::var("FERRY_CRASH_AT") {
        ferry_store::abort_at(point);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let error = format!("{e:#}");
            if json {
                output::json_line(&ErrorReport { error: error.clone() });
            }
            eprintln!("ferry: error: {error}");
            exit::of(&e)
        }
    }
}

/// The command line, with `ferry serve`'s settings from the
/// configuration file's `[serve]` filled in where neither a flag nor the
/// environment gave them.
fn parse() -> Result<Cli> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    config::set_path(cli.config.clone());
    let Some(("serve", given)) = matches.subcommand() else { return Ok(cli) };
    let path = config::path();
    let Some(table) = config::Config::load(&path)?.serve else { return Ok(cli) };
    let command = Cli::command();
    let serve = command.find_subcommand("serve").expect("serve is a command");
    let set = |id: &str| {
        let source = if id == "store" { matches.value_source(id) } else { given.value_source(id) };
        matches!(source, Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable))
    };
    let extra = config::serve_flags(&path, &table, serve, &set)?;
    if extra.is_empty() {
        return Ok(cli);
    }
    let args = std::env::args_os().chain(extra.into_iter().map(Into::into));
    let matches = Cli::command().try_get_matches_from(args).map_err(|e| {
        let said = e.to_string();
        let first = said.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned();
        config::ConfigError(format!("{}: [serve]: {first}", path.display()))
    })?;
    Ok(Cli::from_arg_matches(&matches)?)
}

fn store_path(store: Option<PathBuf>) -> Result<PathBuf> {
    match store {
        Some(p) => Ok(p),
        None => Ok(dirs::data_dir().context("no --store given and no per-user data directory")?.join("ferry")),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let path = store_path(cli.store)?;
    let json = cli.json;
    let open = || init::open(&path);
    match cli.command {
        Command::Init(args) => finish(json, init::run(&path, &args)?),
        Command::Rebuild(args) => finish(json, init::rebuild(&path, &args)?),
        Command::Commit(args) => finish(json, commit::run(&open()?, args, json)?),
        Command::Log(args) => finish(json, log::run(&open()?, args)?),
        Command::Ls(args) => finish(json, ls::run(&open()?, args)?),
        Command::Export(args) => finish(json, export::run(&open()?, args, json)?),
        Command::Cat(args) => cat::run(&path, args),
        Command::Serve(args) => serve::run(&path, *args, json),
        Command::Mirror(args) => mirror::run(args, json),
        Command::Push(args) => finish(json, transfer::push(&path, args, json)?),
        Command::Pull(args) => finish(json, transfer::pull(&path, args, json)?),
        Command::Upload(args) => finish(json, transfer::upload(args, json)?),
        Command::Download(args) => finish(json, transfer::download(args, json)?),
        Command::Remote { action } => finish(json, remote::run(action)?),
        Command::Login(args) => finish(json, remote::login(args)?),
        Command::Logout(args) => finish(json, remote::logout(args)?),
        Command::Token { action } => finish(json, access::token(&path, action)?),
        Command::Visibility(args) => finish(json, access::visibility(&path, args)?),
        Command::Stats => finish(json, stats::run(&open()?)?),
        Command::Fsck => finish(json, fsck::run(&open()?, json)?),
        Command::Gc => finish(json, gc::run(&open()?)?),
        Command::Repos => finish(json, repos::run(&open()?)?),
        Command::Branch { action } => finish(json, branch::run(&open()?, action)?),
        Command::Tag(args) => finish(json, tag::run(&path, args)?),
        Command::Repo { action } => finish(json, repos::repo(&path, action)?),
        Command::Forget(args) => finish(json, forget::run(&path, args)?),
        Command::Audit(args) => finish(json, audit::run(&path, args)?),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "ferry", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpages { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir).with_context(|| dir.display().to_string())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and every argument says what it is for.
    #[test]
    fn every_command_and_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && path != " ferry" {
                missing.push(path.clone());
            }
            for arg in cmd.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }
}
