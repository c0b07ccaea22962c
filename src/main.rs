use std::process::ExitCode;

fn main() -> ExitCode {
    // glibc gives each thread that allocates its own arena (up to 8 per core), and freed memory
    // stays scattered over them: at 2,000 connector ConfigMaps that was a third of the RSS.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // The sandboxed template evaluator is this binary too; it must not start a runtime.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__render") {
        return connect_gate::pipeline::render::template::child_main();
    }
    connect_gate::cli::main()
}
