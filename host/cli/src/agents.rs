//! `converge agents`: what loads from the agents and tools directories, with hashes, and what is rejected.

use crate::Exit;
use crate::load::Load;
use converge_http::AgentsView;
use converge_runtime::WasmRuntime;
use converge_service::Runtime;

pub(crate) fn agents(opts: &Load, json: bool) -> Result<u8, Exit> {
    let runtime = WasmRuntime::new(opts.registry(1)?);
    let inventory = runtime.refresh().map_err(|e| Exit::input(e.to_string()))?;
    if json {
        let text = serde_json::to_string_pretty(&AgentsView::from(inventory.as_ref())).map_err(Exit::failure)?;
        println!("{text}");
        return Ok(0);
    }
    for a in &inventory.agents {
        println!(
            "agent      {:<24} {}  reads [{}] writes [{}]{}",
            a.component.name,
            &a.component.digest[..16],
            a.info.reads.join(", "),
            a.info.writes.join(", "),
            if a.info.required { " required" } else { "" }
        );
    }
    for i in &inventory.invariants {
        println!("invariant  {:<24} {}  {:?}", i.component.name, &i.component.digest[..16], i.info.class);
    }
    for t in &inventory.tools {
        println!("tool       {:<24} {}  Trusted", t.name, &t.digest[..16]);
    }
    for r in &inventory.rejected {
        println!("rejected   {:<24} {}", r.file, r.reason);
    }
    for r in &inventory.rejected_tools {
        println!("rejected   {:<24} {} (tools)", r.file, r.reason);
    }
    Ok(0)
}
