//! The service's side of tools (SPEC §6): the line of validations, storing each report, making accepted and
//! approved tools callable (and revoked ones not), loading them again at start, and what a tenant sees of them.

use crate::error::ServiceError;
use crate::runtime::TrustedTool;
use crate::service::{Service, blocking, now_ms, reply};
use converge_store::{
    Decision, Manifest, NewTool, Report, ReviewOutcome, ReviewRecord, ToolEvent, ToolRecord, ToolStatus, Verdict, wait,
};
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// Longest reviewer name, in bytes.
pub const MAX_REVIEWER: usize = 128;
/// Longest review comment, in bytes.
pub const MAX_COMMENT: usize = 4096;

/// A place in the line of tool validations, taken before the submission's body is read (waiting submissions
/// hold their bodies in memory, so the line is what bounds that memory).
#[derive(Debug)]
pub struct ValidationTicket(#[allow(dead_code)] OwnedSemaphorePermit);

/// What a validation answers: the report of this run of the pipeline, and where the tool stands now.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The report (SPEC §6).
    pub report: Report,
    /// The stored record: its status is the verdict, unless a reviewer decided on this component before.
    pub record: ToolRecord,
    /// Whether the submitter's jobs can call it now.
    pub callable: bool,
}

/// What a tenant sees of the tools: the trusted ones and its own submissions, each with whether it is callable.
#[derive(Debug, Clone)]
pub struct ToolListing {
    /// The operator's tools, callable by every job.
    pub trusted: Vec<TrustedTool>,
    /// The tenant's submissions in the order first stored, each with whether its jobs can call it now.
    pub submitted: Vec<(ToolRecord, bool)>,
}

/// One tool of a tenant's, with its history.
#[derive(Debug, Clone)]
pub enum ToolDetail {
    /// A trusted tool (it has no history).
    Trusted(TrustedTool),
    /// A submission, whether it is callable, and every submission and review of it.
    Submitted(Box<ToolRecord>, bool, Vec<ToolEvent>),
}

impl Service {
    /// Make every stored tool that is `accepted` callable again, in the order they were accepted. A tool that no
    /// longer compiles or links is skipped with a warning (it stays in the store).
    pub(crate) fn load_validated_tools(&self) {
        let records = match self.store.tools(None) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading the stored tools failed; none are callable");
                return;
            }
        };
        let mut accepted: Vec<ToolRecord> = records.into_iter().filter(|r| r.status == ToolStatus::Accepted).collect();
        accepted.sort_by_key(|r| r.accepted_ms);
        for record in accepted {
            if let Err(why) = self.activate(&record) {
                tracing::warn!(tool = %record.name, digest = %record.digest, reason = %why, "stored tool not loaded");
            }
        }
    }

    /// Compile a stored tool from its stored bytes and make it callable.
    fn activate(&self, record: &ToolRecord) -> Result<(), ServiceError> {
        let bytes = self
            .store
            .tool_component(&record.tenant, &record.digest)?
            .ok_or_else(|| ServiceError::NotFound(format!("stored component of tool {}", record.pinned())))?;
        self.runtime.activate(record, &bytes).map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// After a submission or a review: make the tool callable if it is accepted, else not.
    pub(crate) fn sync_tool(&self, record: &ToolRecord) {
        if record.status == ToolStatus::Accepted {
            if let Err(why) = self.activate(record) {
                tracing::warn!(tool = %record.name, reason = %why, "accepted tool not loaded");
            }
        } else {
            self.runtime.deactivate(&record.tenant, &record.digest);
        }
    }

    /// Take a place in the line of validations, or be refused at once when it is full.
    ///
    /// # Errors
    /// [`ServiceError::Overloaded`] with a `retry_after` of at least 5 s.
    pub fn validation_ticket(&self) -> Result<ValidationTicket, ServiceError> {
        Arc::clone(&self.validation_places).try_acquire_owned().map(ValidationTicket).map_err(|_| {
            ServiceError::Overloaded {
                message: format!(
                    "the line of tool validations is full ({} running or waiting); retry later",
                    self.config.validations_waiting.saturating_add(1)
                ),
                retry_after: self.config.retry_after.max(5),
            }
        })
    }

    /// Validate a tool `tenant` submitted, record the report, and make it callable if accepted. Validations run
    /// one at a time (each compiles and runs tests on the cores the jobs use); `ticket` is the caller's place in
    /// the line.
    ///
    /// # Errors
    /// A store failure.
    pub async fn validate(
        self: &Arc<Self>,
        ticket: ValidationTicket,
        tenant: &str,
        bytes: Vec<u8>,
        manifest: Manifest,
    ) -> Result<Validation, ServiceError> {
        let turn = Arc::clone(&self.validation_turn)
            .acquire_owned()
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let svc = Arc::clone(self);
        let tenant = tenant.to_owned();
        // Validate, record and apply in a blocking task of its own, which holds the turn and the place in the
        // line until it is done: a caller that goes away frees neither early, and a report the store committed
        // is applied.
        let validation = tokio::task::spawn_blocking(move || {
            let _held = (turn, ticket);
            let report = svc.runtime.validate(&bytes, &manifest);
            let keep = report.verdict != Verdict::Rejected;
            let new = NewTool {
                digest: report.digest.clone(),
                name: report.name.clone(),
                tenant: tenant.clone(),
                manifest,
                report: report.clone(),
                component: keep.then_some(bytes),
                now_ms: now_ms(),
            };
            let record = wait(svc.store.put_tool(new))?;
            svc.sync_tool(&record);
            let callable = svc.runtime.callable(&tenant, &record.pinned());
            Ok::<_, ServiceError>(Validation { report, record, callable })
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
        tracing::info!(tool = %validation.record.name, digest = %validation.record.digest,
            verdict = validation.report.verdict.as_str(), status = %validation.record.status, "tool validated");
        Ok(validation)
    }

    /// Record a human decision on one of `tenant`'s own submitted tools: `approve` or `reject` one that needs
    /// review, `revoke` one that is accepted. Returns the tool as it is now and whether it is callable.
    ///
    /// # Errors
    /// A reviewer name or comment out of range, no such tool of this tenant, a decision that does not apply to
    /// its status, or a store failure.
    pub async fn review(
        self: &Arc<Self>,
        tenant: &str,
        digest: &str,
        decision: Decision,
        reviewer: String,
        comment: String,
    ) -> Result<(ToolRecord, bool), ServiceError> {
        check_tool_id(digest)?;
        if reviewer.trim().is_empty() || reviewer.len() > MAX_REVIEWER {
            return Err(ServiceError::Invalid(format!("reviewer: 1 to {MAX_REVIEWER} bytes naming who decides")));
        }
        if comment.len() > MAX_COMMENT {
            return Err(ServiceError::Invalid(format!("comment: at most {MAX_COMMENT} bytes")));
        }
        let review = ReviewRecord { decision, reviewer, comment, tenant: tenant.to_owned(), at_ms: now_ms() };
        let svc = Arc::clone(self);
        let (t, d) = (tenant.to_owned(), digest.to_owned());
        // Record and apply in a task of its own: an approval the store committed is applied even if the caller
        // goes away.
        let outcome = tokio::spawn(async move {
            let outcome = reply(svc.store.review_tool(&t, &d, review)).await?;
            if let ReviewOutcome::Recorded(record) = &outcome {
                let (svc, record) = (Arc::clone(&svc), record.clone());
                tokio::task::spawn_blocking(move || svc.sync_tool(&record))
                    .await
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
            }
            Ok::<_, ServiceError>(outcome)
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
        match outcome {
            ReviewOutcome::Recorded(record) => {
                tracing::info!(tool = %record.name, digest = %record.digest, status = %record.status, "tool reviewed");
                let callable = self.runtime.callable(&record.tenant, &record.pinned());
                Ok((*record, callable))
            }
            ReviewOutcome::UnknownTool => Err(ServiceError::NotFound(format!("tool {digest}"))),
            ReviewOutcome::NotPending(status) => Err(ServiceError::NotPending {
                digest: digest.to_owned(),
                status,
                revoke: decision == Decision::Revoke,
            }),
        }
    }

    /// The trusted tools and `tenant`'s own submissions. Another tenant's are neither listed nor callable.
    ///
    /// # Errors
    /// A store failure.
    pub async fn tools(&self, tenant: &str) -> Result<ToolListing, ServiceError> {
        let store = Arc::clone(&self.store);
        let owner = tenant.to_owned();
        let records = blocking(move || store.tools(Some(&owner))).await?;
        let submitted = records
            .into_iter()
            .map(|r| {
                let callable = self.runtime.callable(tenant, &r.pinned());
                (r, callable)
            })
            .collect();
        Ok(ToolListing { trusted: self.inventory().tools.clone(), submitted })
    }

    /// One of `tenant`'s tools, or a trusted tool, by digest.
    ///
    /// # Errors
    /// No such tool for this tenant, or a store failure.
    pub async fn tool(&self, tenant: &str, digest: &str) -> Result<ToolDetail, ServiceError> {
        check_tool_id(digest)?;
        let store = Arc::clone(&self.store);
        let (owner, d) = (tenant.to_owned(), digest.to_owned());
        let (record, history) =
            blocking(move || Ok((store.tool(&owner, &d)?, store.tool_history(&owner, &d)?))).await?;
        if let Some(record) = record {
            let callable = self.runtime.callable(tenant, &record.pinned());
            return Ok(ToolDetail::Submitted(Box::new(record), callable, history));
        }
        match self.inventory().tools.iter().find(|t| t.digest == digest) {
            Some(t) => Ok(ToolDetail::Trusted(t.clone())),
            None => Err(ServiceError::NotFound(format!("tool {digest}"))),
        }
    }
}

/// A tool id is a SHA-256 digest: anything else names no tool (not found, not a bad request).
///
/// # Errors
/// [`ServiceError::NotFound`].
pub fn check_tool_id(id: &str) -> Result<(), ServiceError> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        let shown: String = id.chars().take(80).collect();
        Err(ServiceError::NotFound(format!("tool {shown} (an id is a SHA-256 digest)")))
    }
}
