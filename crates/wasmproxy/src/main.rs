//! The wasmproxy binary: serve an Envoy configuration, or inspect and run one plugin.

/// `eprintln!` that does not panic when stderr is gone (a closed pipe): the proxy keeps
/// serving whoever started it and however they left.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod logging;
mod plugin_run;
mod plugin_test;
mod serve;
mod signals;

fn main() -> std::process::ExitCode {
    match cli::Command::parse(std::env::args().skip(1)) {
        Ok(command) => match command.run() {
            Ok(true) => std::process::ExitCode::SUCCESS,
            Ok(false) => std::process::ExitCode::FAILURE,
            Err(e) => {
                note!("wasmproxy: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Err(e) => {
            note!("wasmproxy: {e}\n\n{}", cli::USAGE);
            std::process::ExitCode::from(2)
        }
    }
}
