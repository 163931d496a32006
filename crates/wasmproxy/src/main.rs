//! The wasmproxy binary: serve an Envoy configuration, or inspect and run one plugin.

mod cli;
mod logging;
mod plugin_run;
mod serve;
mod signals;

fn main() -> std::process::ExitCode {
    match cli::Command::parse(std::env::args().skip(1)) {
        Ok(command) => match command.run() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wasmproxy: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("wasmproxy: {e}\n\n{}", cli::USAGE);
            std::process::ExitCode::from(2)
        }
    }
}
