//! Processes an HA demo left behind. An HA demo's etcd members and control replicas are child
//! processes whose command lines name the demo's directory (`verge-demo-ha-*` in the temporary
//! directory), and the demo writes its own process id there ([`PID_FILE`]). A demo killed with
//! SIGKILL cannot stop its children; the next HA demo finds each directory whose demo is gone,
//! kills the processes that name it, and removes it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The demo's process id, in its directory.
pub const PID_FILE: &str = "demo.pid";
/// How an HA demo's directory is named in the temporary directory.
pub const DIR_PREFIX: &str = "verge-demo-ha-";

/// Writes this process's id into the demo's directory `dir`.
pub fn record_demo(dir: &Path) -> std::io::Result<()> {
    fs::write(dir.join(PID_FILE), std::process::id().to_string())
}

/// What one sweep found: processes killed and directories removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    pub processes: Vec<u32>,
    pub dirs: Vec<PathBuf>,
}

/// Sweeps `tmp` for HA demo directories whose demo process is gone: kills (SIGKILL) every
/// process whose command line names such a directory, then removes it. A directory whose demo
/// still runs, or without a readable process id (being set up), is left alone.
pub fn reap(tmp: &Path) -> Reaped {
    let mut reaped = Reaped::default();
    let Ok(entries) = fs::read_dir(tmp) else {
        return reaped;
    };
    let abandoned: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(DIR_PREFIX))
        .map(|e| e.path())
        .filter(|dir| {
            let demo = fs::read_to_string(dir.join(PID_FILE)).ok();
            demo.and_then(|pid| pid.trim().parse::<u32>().ok())
                .is_some_and(|pid| !alive(pid))
        })
        .collect();
    if abandoned.is_empty() {
        return reaped;
    }
    for (pid, cmdline) in processes() {
        let named = abandoned
            .iter()
            .any(|dir| cmdline.contains(&*dir.to_string_lossy()));
        if named && pid != std::process::id() {
            let killed = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if killed {
                reaped.processes.push(pid);
            }
        }
    }
    for dir in abandoned {
        if fs::remove_dir_all(&dir).is_ok() {
            reaped.dirs.push(dir);
        }
    }
    reaped
}

/// Whether process `pid` exists and has not exited: a demo killed a moment ago may still be a
/// zombie, not yet waited for by its parent.
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")) else {
        return false;
    };
    // `pid (comm) state …`: the state follows the last parenthesis (comm may hold any).
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Every process's id and command line (arguments joined by spaces).
fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let raw = fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            Some((pid, cmdline))
        })
        .collect()
}
