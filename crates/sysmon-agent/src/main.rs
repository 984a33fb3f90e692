//! `sysmon-agent`: the program is [`sysmon_agent::app`].

fn main() -> std::process::ExitCode {
    sysmon_agent::app::main(|_| {})
}
