//! `kinde-meter`: serve the meter usage API, mint tokens, manage agreements, read
//! usage. This crate only wires the others together; each subcommand lives in
//! its own module under `commands/`.

// Doc comments on the clap types are the --help text, where a URL reads best bare.
#![allow(rustdoc::bare_urls)]

mod cli;
#[cfg(test)]
mod cli_reference;
mod commands;
mod logging;

use clap::Parser;

/// mimalloc rather than glibc's malloc: the server allocates per request on
/// the HTTP workers and frees much of it on the SQLite writer thread, the case
/// where glibc's arenas are slowest (see the README's Performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let error_status = commands::error_status(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kinde-meter: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(error_status);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<commands::ExitStatus>() {
            Some(status) => std::process::ExitCode::from(status.0),
            None => {
                eprintln!("kinde-meter: {e:#}");
                std::process::ExitCode::from(error_status)
            }
        },
    }
}
