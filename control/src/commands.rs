//! The operator commands that talk to a running deployment's admin API — `verge purge` and
//! `verge reload` — with what they print and the exit code they end with: 0 done, 1 refused or
//! incomplete, 2 the request could not be made (bad arguments, unreachable).

use std::process::ExitCode;
use std::time::Duration;

use verge_config::wire::PurgeSpec;

use crate::client::AdminClient;

/// Exit code when the command could not be made or sent.
const EXIT_UNUSABLE: u8 = 2;

/// `verge reload`: asks the node (edge, shield or control) behind `admin` to reload its
/// configuration; prints what was applied, or every problem of a refused file.
pub async fn reload(admin: &str, token: &str) -> ExitCode {
    let client = match AdminClient::new(admin, token) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("verge reload: {e}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    match client.reload().await {
        Ok(Ok(report)) if report.changed.is_empty() => {
            println!("configuration version {}: nothing changed", report.version);
            ExitCode::SUCCESS
        }
        Ok(Ok(report)) => {
            println!(
                "configuration version {}: applied {}",
                report.version,
                report.changed.join(", ")
            );
            ExitCode::SUCCESS
        }
        Ok(Err(refusal)) => {
            eprintln!(
                "verge reload: refused ({}); the running configuration stays:",
                refusal.error
            );
            for error in &refusal.errors {
                eprintln!("  - {error}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("verge reload: {e}");
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}

/// `verge purge`: sends `spec` to control and waits up to `timeout` until every live node has
/// applied it, then prints each node's state.
pub async fn purge(control: &str, token: &str, spec: &PurgeSpec, timeout: &str) -> ExitCode {
    if let Err(e) = spec.validate() {
        eprintln!("verge purge: {e}");
        return ExitCode::from(EXIT_UNUSABLE);
    }
    let timeout = match verge_config::parse_duration(timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("verge purge: --timeout: {e}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    let client = match AdminClient::new(control, token) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("verge purge: --control: {e}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    purge_and_wait(&client, spec, timeout).await
}

async fn purge_and_wait(client: &AdminClient, spec: &PurgeSpec, timeout: Duration) -> ExitCode {
    let accepted = match client.purge(spec).await {
        Ok(accepted) => accepted,
        Err(e) => {
            eprintln!("verge purge: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("purge {} accepted (seq {})", accepted.id, accepted.seq);
    let (status, complete) = match client.wait(accepted.id, timeout).await {
        Ok(status) => (status, true),
        Err(e) => {
            eprintln!("verge purge: {e}");
            match client.status(accepted.id).await {
                Ok(status) => (status, false),
                Err(_) => return ExitCode::FAILURE,
            }
        }
    };
    println!("{:<24} {:<7} {:<8} applied after", "node", "role", "state");
    for node in &status.nodes {
        let after = node
            .applied_after_ms
            .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"));
        println!(
            "{:<24} {:<7} {:<8} {after}",
            node.id.as_str(),
            node.role.to_string(),
            node.state
        );
    }
    match (complete, status.completed_after_us) {
        (true, Some(us)) => {
            println!(
                "complete on every live node after {:.1} ms",
                us as f64 / 1000.0
            );
            ExitCode::SUCCESS
        }
        (true, None) => {
            println!("complete on every live node");
            ExitCode::SUCCESS
        }
        (false, _) => ExitCode::FAILURE,
    }
}
