//! What an HA demo killed with SIGKILL leaves behind (its etcd members and replicas) is stopped
//! by the next one: only processes that name a directory whose demo is gone.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command};

use verge_demo::orphans::{reap, DIR_PREFIX, PID_FILE};

/// A long-running process whose command line names `dir`, as an etcd member's or a replica's
/// does.
fn naming(dir: &Path) -> Child {
    let child = Command::new("sh")
        .args(["-c", "sleep 300"])
        .arg(dir.join("member"))
        .spawn()
        .unwrap();
    // Until it has executed, the child's command line is still this test's.
    let cmdline = format!("/proc/{}/cmdline", child.id());
    let named = |c: &[u8]| String::from_utf8_lossy(c).contains(&*dir.to_string_lossy());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read(&cmdline).is_ok_and(|c| named(&c)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{cmdline} never named {dir:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child
}

#[test]
fn processes_of_a_demo_that_is_gone_are_killed_and_a_running_demos_are_not() {
    let root = tempfile::tempdir().unwrap();
    let gone = root.path().join(format!("{DIR_PREFIX}gone"));
    let running = root.path().join(format!("{DIR_PREFIX}running"));
    let starting = root.path().join(format!("{DIR_PREFIX}starting"));
    for dir in [&gone, &running, &starting] {
        std::fs::create_dir(dir).unwrap();
    }
    // A demo that was killed but not waited for yet (a zombie, as a SIGKILLed demo is until
    // its parent reaps it), one still running (this test), one not yet recorded.
    let mut killed = Command::new("sleep").arg("300").spawn().unwrap();
    killed.kill().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::fs::write(gone.join(PID_FILE), killed.id().to_string()).unwrap();
    std::fs::write(running.join(PID_FILE), std::process::id().to_string()).unwrap();
    let mut orphan = naming(&gone);
    let mut kept = naming(&running);
    let mut young = naming(&starting);

    let reaped = reap(root.path());
    assert_eq!(reaped.processes, [orphan.id()]);
    assert_eq!(reaped.dirs, std::slice::from_ref(&gone));
    assert_eq!(orphan.wait().unwrap().signal(), Some(9));
    assert!(!gone.exists());
    for (child, dir) in [(&mut kept, &running), (&mut young, &starting)] {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{} was stopped",
            dir.display()
        );
        assert!(dir.exists());
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Nothing abandoned: nothing done.
    assert_eq!(reap(root.path()), Default::default());
    killed.wait().unwrap();
}
