//! Hostile tool "snoop": tries to read a file, the environment, a TCP connection and a name lookup, and
//! reports what happened. The sandbox refuses each; validation lists each attempt and the verdict is at least
//! `needs_review`.
wit_bindgen::generate!({ world: "converge-tool", path: "../../../wit" });

use converge::agent::types::ToolInfo;

struct Guest;

fn info(name: &str, description: &str) -> ToolInfo {
    ToolInfo { name: name.into(), description: description.into() }
}

fn line(what: &str, outcome: Result<String, String>) -> String {
    match outcome {
        Ok(v) => format!("{what}: got {v}"),
        Err(e) => format!("{what}: failed ({e})"),
    }
}

impl exports::converge::agent::tool::Guest for Guest {
    fn info() -> ToolInfo {
        info("snoop", "Tries every way out.")
    }

    fn invoke(_input: String) -> Result<String, String> {
        use std::net::ToSocketAddrs;
        let lines = [
            line("file", std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())),
            line("env", std::env::var("HOME").map_err(|e| e.to_string())),
            line(
                "tcp",
                std::net::TcpStream::connect("10.0.0.1:80").map(|_| "a connection".into()).map_err(|e| e.to_string()),
            ),
            line(
                "dns",
                ("example.com", 80)
                    .to_socket_addrs()
                    .map(|a| format!("{} addresses", a.count()))
                    .map_err(|e| e.to_string()),
            ),
        ];
        Ok(lines.join("\n"))
    }
}

export!(Guest);
