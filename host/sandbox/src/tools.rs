//! The `converge:agent/tools` capability. The sandbox does not know how a tool name resolves, what a tool may
//! cost or how failures are counted: an agent call is given a [`ToolHost`] that decides, and this file only
//! charges hostcall fuel, logs the outcome and maps it to the WIT `tool-error`.

use crate::bindings::{tools, types};
use crate::call::State;
use crate::clip;
use crate::log::MAX_LINE;
use converge_engine::{ToolCall, ToolOutcome};

/// What `tools.invoke` reaches during one agent call.
pub trait ToolHost: Send {
    /// Invoke `name` with `input` for the agent.
    ///
    /// # Errors
    /// The outcome (`denied`, `unknown`, `failed`, `unavailable`) and a sentence for the agent.
    fn invoke(&mut self, name: &str, input: &str) -> Result<String, (ToolOutcome, String)>;

    /// The call is over: the invocations it made, in order.
    fn finish(self: Box<Self>) -> Vec<ToolCall>;
}

impl tools::Host for State {
    fn invoke(&mut self, name: String, input: String) -> wasmtime::Result<Result<String, types::ToolError>> {
        self.charge(name.len() + input.len())?;
        let shown = clip(&name, 128).to_owned();
        let result = match self.tools.as_mut() {
            Some(host) => host.invoke(&name, &input),
            None => Err((ToolOutcome::Denied, format!("tool {shown} is not in this agent's declared tools"))),
        };
        match result {
            Ok(output) => {
                self.charge(output.len())?;
                self.logs.push(format!("tool {shown}: ok"));
                Ok(Ok(output))
            }
            Err((outcome, message)) => {
                self.charge(message.len())?;
                let kind = match outcome {
                    ToolOutcome::Denied => "denied",
                    ToolOutcome::Unknown => "unknown",
                    ToolOutcome::Unavailable => "unavailable",
                    ToolOutcome::Failed | ToolOutcome::Ok => "failed",
                };
                self.logs.push(format!("tool {shown}: {kind}: {}", clip(&message, MAX_LINE)));
                Ok(Err(match outcome {
                    ToolOutcome::Denied => types::ToolError::Denied(message),
                    ToolOutcome::Unknown => types::ToolError::Unknown(message),
                    ToolOutcome::Unavailable => types::ToolError::Unavailable(message),
                    ToolOutcome::Failed | ToolOutcome::Ok => types::ToolError::Failed(message),
                }))
            }
        }
    }
}
