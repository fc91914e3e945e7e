//! Command-line interface: `cinemesh <command>`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_TOML};

/// Tracker-less peer-to-peer distribution of digital cinema packages.
#[derive(Debug, Parser)]
#[command(name = "cinemesh", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configuration: print the default or the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `cinemesh config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the default configuration as commented TOML.
    Default,
    /// Print the effective configuration (file + defaults), after validation.
    Show {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Parses the process arguments and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_TOML}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Show { config }) => {
            let cfg = load_config(config.as_deref())?;
            print!("{}", cfg.to_toml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads the file if given (else defaults) and validates it.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let cfg = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    cfg.validate().with_context(|| match path {
        Some(p) => format!("config file {}", p.display()),
        None => "default configuration".to_owned(),
    })?;
    Ok(cfg)
}
