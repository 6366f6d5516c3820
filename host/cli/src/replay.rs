//! `converge replay JOB_ID`: run a stored job again and compare it with its trail.

use crate::Exit;
use crate::load::{Load, executor, progress, thread_count};
use crate::store::{StoreArg, open_to_read};
use converge_runtime::replay::{ReplayError, replay as run_replay};

pub(crate) fn replay(id: &str, opts: &Load, store: &StoreArg, threads: Option<usize>) -> Result<u8, Exit> {
    let store = open_to_read(store, &opts.data)?;
    let threads = thread_count(threads)?;
    let registry = opts.registry(threads + 1)?;
    let outcome = run_replay(store.as_ref(), registry, id, &executor(threads)?, progress);
    store.close();
    let report = outcome.map_err(|e| match e {
        ReplayError::NoSuchJob(_) => Exit::input(format!("no job {id} in the store")),
        ReplayError::NoResult { .. } | ReplayError::Spec { .. } | ReplayError::Components(_) => {
            Exit::input(e.to_string())
        }
        other => Exit::failure(other),
    })?;
    for c in &report.changed_components {
        eprintln!("converge: component changed since the run: {c}");
    }
    for t in &report.unloaded_tools {
        eprintln!("converge: stored tool {t} not loaded");
    }
    println!("{}", serde_json::to_string_pretty(&report).map_err(Exit::failure)?);
    eprintln!(
        "converge: replay of {id}: {}",
        if report.identical {
            "identical context_hash and tool calls"
        } else if report.tool_calls.identical {
            "context_hash DIFFERS"
        } else {
            "tool calls DIFFER"
        }
    );
    Ok(u8::from(!report.identical))
}
