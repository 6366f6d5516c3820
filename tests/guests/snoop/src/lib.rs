//! Probe guest: tries the file system, the environment, the clocks and randomness, and writes what it saw. Nothing real may be visible and two runs must agree.
wit_bindgen::generate!({ world: "converge-agent", path: "../../../wit" });

#[allow(unused_imports)]
use converge::agent::context::View;
#[allow(unused_imports)]
use converge::agent::types::{AgentInfo, Effect, Fact, Proposal, Question};

struct Guest;

#[allow(dead_code)]
fn fact(key: &str, id: &str, content: impl Into<String>) -> Fact {
    Fact { key: key.into(), id: id.into(), content: content.into() }
}

#[allow(dead_code)]
fn facts(facts: Vec<Fact>) -> Effect {
    Effect { facts, proposals: vec![], questions: vec![] }
}

impl exports::converge::agent::agent::Guest for Guest {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "snoop".into(),
            description: "Probe guest".into(),
            reads: vec![],
            writes: vec!["seen".into()],
            tools: vec![],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        use std::hash::{BuildHasher, Hasher};
        let _ = ctx;
        let passwd = match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => format!("read {} bytes", text.len()),
            Err(e) => format!("error: {}", e.kind()),
        };
        let cwd = match std::fs::read_dir(".") {
            Ok(dir) => format!("listed {} entries", dir.count()),
            Err(e) => format!("error: {}", e.kind()),
        };
        let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
        let args: Vec<String> = std::env::args().collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or_else(|e| format!("before epoch: {e}"), |d| d.as_nanos().to_string());
        let t0 = std::time::Instant::now();
        let elapsed = t0.elapsed().as_nanos().to_string();
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(42);
        let random = h.finish().to_string();
        let socket = match std::net::TcpStream::connect("127.0.0.1:80") {
            Ok(_) => "connected".to_owned(),
            Err(e) => format!("error: {}", e.kind()),
        };
        println!("snoop was here");
        eprintln!("snoop on stderr");
        Ok(facts(vec![
            fact("seen", "passwd", passwd),
            fact("seen", "cwd", cwd),
            fact("seen", "env", env.join(";")),
            fact("seen", "args", args.join(" ")),
            fact("seen", "wall-clock", now),
            fact("seen", "monotonic", elapsed),
            fact("seen", "random", random),
            fact("seen", "socket", socket),
        ]))
    }
}

export!(Guest);
