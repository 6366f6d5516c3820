//! The one job driver: run a [`Job`] to its next stop from what the outside knows of it — the answers given so
//! far and whether a client cancelled it — and tell the outside about every cycle and every wait.
//!
//! `converge serve` (a worker), `converge run` and `converge replay` all run jobs through [`drive`]. A job is its
//! spec plus its answers: resuming it after a restart, an answer or a cancel means running it again from the
//! start with what is known, and a replay does exactly the same. Because there is one driver, the two cannot
//! drift apart: a resumed or replayed job sees its answers at the same cycles as its first run did.
//!
//! The rules, in order, before every cycle:
//! 1. every known answer whose question is open now is given to the job (once);
//! 2. a job cancelled after `cancel_at` cycles is cancelled once it has run them;
//! 3. then one cycle runs, and the journal hears of it.
//!
//! When the job waits for answers: if it was cancelled (by `cancel_at` or by the [`Control`]), it ends as
//! `cancelled`; otherwise the journal is asked for answers that arrived meanwhile — none means the job stops
//! here, waiting. Like the rest of the engine, the driver does no I/O itself: the journal does.

use crate::exec::{Control, Executor, Interrupt};
use crate::job::Job;
use crate::report::{CycleTrace, Status};
use std::collections::{BTreeMap, BTreeSet};

/// What the outside knows of a job before it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Answers by question id, each given as soon as its question is open.
    pub answers: BTreeMap<String, String>,
    /// The job was cancelled once it had run this many cycles (a cancel recorded while it ran or waited).
    pub cancel_at: Option<u32>,
}

/// Where the driver reports. Its methods may do I/O and may fail; a failure stops the drive and is returned.
pub trait Journal {
    /// Why the journal could not record something.
    type Error;

    /// A cycle ran; `trace` is its trace (the last of `job.trace()`).
    ///
    /// # Errors
    /// The cycle could not be recorded; the drive stops.
    fn cycle(&mut self, job: &Job, trace: &CycleTrace) -> Result<(), Self::Error>;

    /// The job waits for answers it has not been given. `given` lists the questions answered so far. Return the
    /// answers that arrived meanwhile to go on, or none to stop here (the job stays `waiting`).
    ///
    /// # Errors
    /// The wait could not be recorded; the drive stops.
    fn waiting(&mut self, job: &Job, given: &BTreeSet<String>) -> Result<BTreeMap<String, String>, Self::Error>;
}

/// A journal that records nothing and never has new answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Journal for Silent {
    type Error = std::convert::Infallible;

    fn cycle(&mut self, _job: &Job, _trace: &CycleTrace) -> Result<(), Self::Error> {
        Ok(())
    }

    fn waiting(&mut self, _job: &Job, _given: &BTreeSet<String>) -> Result<BTreeMap<String, String>, Self::Error> {
        Ok(BTreeMap::new())
    }
}

/// Run `job` to its next stop: a terminal status, or `waiting` for an answer nobody has given. Returns the
/// job's status at the stop.
///
/// # Errors
/// What the journal returned; the job is left where it stood.
pub fn drive<E: Executor, C: Control, J: Journal>(
    job: &mut Job,
    executor: &E,
    control: &C,
    inputs: Inputs,
    journal: &mut J,
) -> Result<Status, J::Error> {
    let Inputs { mut answers, cancel_at } = inputs;
    let mut given: BTreeSet<String> = BTreeSet::new();
    loop {
        for (question, answer) in &answers {
            if !given.contains(question) && job.answer(question, answer.clone()).is_ok() {
                given.insert(question.clone());
            }
        }
        if cancel_at.is_some_and(|at| job.cycles() >= at) {
            job.cancel();
        }
        if job.step(executor, control).is_some() {
            if let Some(trace) = job.trace().last() {
                journal.cycle(job, trace)?;
            }
            continue;
        }
        if job.status() != Status::Waiting {
            return Ok(job.status());
        }
        if cancel_at.is_some() || control.interrupt() == Some(Interrupt::Cancel) {
            job.cancel();
            continue;
        }
        let more = journal.waiting(job, &given)?;
        if more.is_empty() {
            return Ok(Status::Waiting);
        }
        for (question, answer) in more {
            // An answer that cannot be taken now never will be at this stop: count it as given so that asking
            // the journal again cannot loop.
            if let Err(e) = job.answer(&question, answer.clone()) {
                tracing::warn!(question = %question, error = %e, "an answer was not applied");
            }
            given.insert(question.clone());
            answers.insert(question, answer);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{Inputs, Journal, Silent, drive};
    use crate::exec::{Agent, NoInterrupt, SerialExecutor};
    use crate::job::Job;
    use crate::model::{AgentInfo, Effect, Fact, Question};
    use crate::report::{CycleTrace, Status};
    use crate::spec::JobSpec;
    use crate::{Execution, View};
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    /// Asks `q` in cycle 1; once `answers/q` is there, writes `out/done` with the answer.
    struct Asker(AgentInfo);

    impl Agent for Asker {
        fn info(&self) -> &AgentInfo {
            &self.0
        }

        fn execute(&self, view: &View) -> Execution {
            if let Some(a) = view.get("answers", "q") {
                return Effect { facts: vec![Fact::new("out", "done", a.content)], ..Effect::default() }.into();
            }
            let questions = vec![Question { id: "q".into(), prompt: "which?".into() }];
            Effect { questions, ..Effect::default() }.into()
        }
    }

    fn job() -> Job {
        let info = AgentInfo {
            name: "asker".into(),
            reads: vec!["answers".into()],
            writes: vec!["out".into()],
            ..AgentInfo::default()
        };
        Job::new(&JobSpec::new("ask"), &[Arc::new(Asker(info)) as Arc<dyn Agent>], &[]).unwrap()
    }

    fn answers(a: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("q".to_owned(), a.to_owned())])
    }

    /// Counts cycles and waits; hands out `late` answers at the first wait.
    #[derive(Default)]
    struct Recorder {
        cycles: Vec<u32>,
        waits: Vec<BTreeSet<String>>,
        late: Vec<BTreeMap<String, String>>,
    }

    impl Journal for Recorder {
        type Error = ();

        fn cycle(&mut self, _job: &Job, trace: &CycleTrace) -> Result<(), ()> {
            self.cycles.push(trace.cycle);
            Ok(())
        }

        fn waiting(&mut self, _job: &Job, given: &BTreeSet<String>) -> Result<BTreeMap<String, String>, ()> {
            self.waits.push(given.clone());
            Ok(if self.late.is_empty() { BTreeMap::new() } else { self.late.remove(0) })
        }
    }

    #[test]
    fn a_known_answer_is_given_as_its_question_opens() {
        let mut j = job();
        let mut r = Recorder::default();
        let inputs = Inputs { answers: answers("left"), cancel_at: None };
        assert_eq!(drive(&mut j, &SerialExecutor, &NoInterrupt, inputs, &mut r), Ok(Status::Converged));
        assert!(r.waits.is_empty(), "never asked the journal");
        assert_eq!(j.view().get("out", "done").unwrap().content, "left");
    }

    #[test]
    fn a_job_without_its_answer_stops_waiting_and_goes_on_with_one_that_arrives() {
        let mut j = job();
        assert_eq!(drive(&mut j, &SerialExecutor, &NoInterrupt, Inputs::default(), &mut Silent), Ok(Status::Waiting));
        let mut j = job();
        let mut r = Recorder { late: vec![answers("right")], ..Recorder::default() };
        assert_eq!(drive(&mut j, &SerialExecutor, &NoInterrupt, Inputs::default(), &mut r), Ok(Status::Converged));
        assert_eq!(r.waits, [BTreeSet::new()], "asked once, with nothing given yet");
        assert_eq!(j.view().get("out", "done").unwrap().content, "right");
        // Resumed from the start with the stored answer, the job reaches the same context.
        let mut again = job();
        let inputs = Inputs { answers: answers("right"), cancel_at: None };
        drive(&mut again, &SerialExecutor, &NoInterrupt, inputs, &mut Silent).unwrap();
        assert_eq!(again.context_hash(), j.context_hash());
    }

    #[test]
    fn an_answer_that_cannot_be_taken_does_not_loop() {
        let mut j = job();
        let unknown = BTreeMap::from([("nope".to_owned(), "x".to_owned())]);
        let mut r = Recorder { late: vec![unknown], ..Recorder::default() };
        assert_eq!(drive(&mut j, &SerialExecutor, &NoInterrupt, Inputs::default(), &mut r), Ok(Status::Waiting));
        assert_eq!(r.waits.len(), 2, "asked again once, with the unusable answer counted as given");
        assert!(r.waits[1].contains("nope"));
    }

    #[test]
    fn a_cancel_recorded_at_a_cycle_ends_the_job_there_running_or_waiting() {
        let mut j = job();
        let mut r = Recorder::default();
        let inputs = Inputs { answers: BTreeMap::new(), cancel_at: Some(0) };
        assert_eq!(drive(&mut j, &SerialExecutor, &NoInterrupt, inputs, &mut r), Ok(Status::Cancelled));
        assert!(r.cycles.is_empty(), "cancelled before any cycle");
        let mut j = job();
        let mut r = Recorder::default();
        let inputs = Inputs { answers: BTreeMap::new(), cancel_at: Some(5) };
        assert_eq!(drive(&mut j, &SerialExecutor, &NoInterrupt, inputs, &mut r), Ok(Status::Cancelled));
        assert_eq!((r.cycles.as_slice(), r.waits.len()), (&[1, 2][..], 0), "a waiting job with a cancel ends at once");
    }

    #[test]
    fn a_journal_failure_stops_the_drive() {
        struct Broken;
        impl Journal for Broken {
            type Error = &'static str;
            fn cycle(&mut self, _: &Job, _: &CycleTrace) -> Result<(), &'static str> {
                Err("disk full")
            }
            fn waiting(&mut self, _: &Job, _: &BTreeSet<String>) -> Result<BTreeMap<String, String>, &'static str> {
                Ok(BTreeMap::new())
            }
        }
        let mut j = job();
        assert_eq!(drive(&mut j, &SerialExecutor, &NoInterrupt, Inputs::default(), &mut Broken), Err("disk full"));
        assert_eq!(j.cycles(), 1);
    }
}
