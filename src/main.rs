use std::process::ExitCode;

fn main() -> ExitCode {
    connect_gate::allocator::limit_arenas();
    // The sandboxed template evaluator is this binary too; it must not start a runtime.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__render") {
        return connect_gate::pipeline::render::template::child_main();
    }
    connect_gate::cli::main()
}
