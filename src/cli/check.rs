//! `credproxy check`: validate the config and say what is wrong, where.

use std::process::ExitCode;

use super::{ConfigArg, EXIT_CONFIG};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn main(args: Args) -> ExitCode {
    let path = match crate::config::locate(args.config.config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match crate::config::load(&path) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: ok", path.display());
            for p in &config.providers {
                let hosts: Vec<String> = p.hosts.iter().map(|h| h.to_string()).collect();
                println!(
                    "  provider {} (preset {}): hosts {} -> {}{}",
                    p.name,
                    p.preset.name(),
                    hosts.join(", "),
                    p.upstream.origin(),
                    if p.needs_login() {
                        format!("  [needs `credproxy login {}` once]", p.name)
                    } else {
                        String::new()
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!(
                "{} problem{} in {}",
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" },
                path.display()
            );
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
