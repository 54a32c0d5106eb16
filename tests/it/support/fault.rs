//! Scripted failures for the next token calls.
//!
//! A test queues faults with `push_fault`; each call to a fake's token-issuing endpoint (token,
//! BlendVision login and mint) takes the next one. The shapes mirror what real token servers do
//! on a bad day: RFC 6749 §5.2 errors, 5xx with `Retry-After` (RFC 9110 §10.2.3), redirects,
//! slow or oversized answers, and tokens that could smuggle a header if injected verbatim.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;

use super::http::{Reply, bytes_reply, json_reply, redirect_reply, retry_after_reply};

/// Size of the [`Fault::Huge`] body: far above any sane token-response cap.
pub const HUGE_BODY: usize = 10 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a small JSON body.
    Status(u16),
    /// 503 with `Retry-After: secs`.
    Status503RetryAfter(u64),
    /// Wait this long (on tokio's clock), then answer normally.
    Delay(Duration),
    /// 200, `Content-Type: application/json`, and this raw body.
    Malformed(String),
    /// 400 with the RFC 6749 §5.2 body `{"error": code}`.
    ErrorCode(&'static str),
    /// 302 to this URL.
    Redirect(String),
    /// 200 with a JSON body of [`HUGE_BODY`] bytes.
    Huge,
    /// Answer normally, but the access token contains `\r\n`.
    CrlfToken,
    /// Answer normally, but the access token contains a space.
    SpaceToken,
}

/// How the access token of a normally answered call is shaped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenShape {
    #[default]
    Normal,
    Crlf,
    Space,
}

/// What a token call does after consulting the script.
pub enum Outcome {
    /// Reply with this instead of the normal answer.
    Respond(Reply),
    /// Handle the request normally, shaping the token like this.
    Proceed(TokenShape),
}

#[derive(Default)]
pub struct FaultScript {
    queue: Mutex<VecDeque<Fault>>,
}

impl FaultScript {
    pub fn push(&self, fault: Fault) {
        self.queue.lock().push_back(fault);
    }

    pub fn pending(&self) -> usize {
        self.queue.lock().len()
    }

    pub fn clear(&self) {
        self.queue.lock().clear();
    }

    /// Takes the next fault, waiting out a [`Fault::Delay`] before returning.
    pub async fn next_outcome(&self) -> Outcome {
        // The lock is released before any await: the guard lives only in this statement.
        let fault = self.queue.lock().pop_front();
        let Some(fault) = fault else {
            return Outcome::Proceed(TokenShape::Normal);
        };
        match fault {
            Fault::Status(status) => Outcome::Respond(json_reply(
                status,
                &json!({"error": "injected", "error_description": "scripted status"}),
            )),
            Fault::Status503RetryAfter(secs) => Outcome::Respond(retry_after_reply(503, secs)),
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                Outcome::Proceed(TokenShape::Normal)
            }
            Fault::Malformed(body) => Outcome::Respond(bytes_reply(200, "application/json", body)),
            Fault::ErrorCode(code) => Outcome::Respond(json_reply(
                400,
                &json!({"error": code, "error_description": "scripted error"}),
            )),
            Fault::Redirect(url) => Outcome::Respond(redirect_reply(&url)),
            Fault::Huge => Outcome::Respond(huge_reply()),
            Fault::CrlfToken => Outcome::Proceed(TokenShape::Crlf),
            Fault::SpaceToken => Outcome::Proceed(TokenShape::Space),
        }
    }
}

/// A syntactically plausible token response padded to [`HUGE_BODY`], so only a size cap stops it.
fn huge_reply() -> Reply {
    let head = br#"{"access_token":"huge","token_type":"Bearer","padding":""#;
    let tail = br#""}"#;
    let mut body = Vec::with_capacity(HUGE_BODY);
    body.extend_from_slice(head);
    body.resize(HUGE_BODY - tail.len(), b'a');
    body.extend_from_slice(tail);
    bytes_reply(200, "application/json", body)
}
