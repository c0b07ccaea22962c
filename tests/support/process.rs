//! The connect-gate binary under test, run as a process, and loopback ports for it.
//!
//! Self-contained (nothing from the rest of `support`), because `tests/cli` includes this file
//! too, for [`BIN`].

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The connect-gate binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_connect-gate");

/// A free loopback port (bound, then released for the process under test to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A connect-gate process whose output goes to a log file; SIGKILLed on drop.
pub struct Process {
    child: std::process::Child,
    pub log: PathBuf,
}

impl Process {
    /// Runs `connect-gate ARGS` with `envs` added to this process's environment.
    pub fn spawn(args: &[String], envs: &[(&str, &std::ffi::OsStr)], log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .envs(envs.iter().copied())
            .env("CONNECT_GATE_LOG", "info,connect_gate=debug")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Process { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 30 lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL: no lease release, no cleanup.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
