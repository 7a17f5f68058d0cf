//! Idempotency: a request under an `Idempotency-Key` already answered gets that answer again,
//! and a document accepted again under another key is noticed, because a naive ERP books it
//! twice.

use crate::answer::Answer;
use std::collections::{HashMap, HashSet};

/// What the simulator remembers per idempotency key and per accepted document.
#[derive(Debug, Default)]
pub(crate) struct Idempotency {
    /// Answers per idempotency key; only 201 and 400, because 429 and 503 invite a retry.
    answers: HashMap<String, Answer>,
    /// Error-injection draws per key not answered yet.
    attempts: HashMap<String, u32>,
    /// Ids of accepted documents: accepting one again is a double booking.
    accepted_ids: HashSet<String>,
}

impl Idempotency {
    /// The answer remembered under `key`, marked as a replay.
    pub fn replay(&self, key: &str) -> Option<Answer> {
        let mut answer = self.answers.get(key)?.clone();
        answer.replayed = true;
        Some(answer)
    }

    /// Remembers `answer` as the answer to `key`; its attempts are over.
    pub fn remember(&mut self, key: &str, answer: Answer) -> Answer {
        self.attempts.remove(key);
        self.answers.insert(key.to_string(), answer.clone());
        answer
    }

    /// Counts one more attempt under `key` and returns its number, from 1.
    pub fn attempt(&mut self, key: &str) -> u32 {
        let n = self.attempts.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Notes document `id` as accepted; `false` when it had been accepted before.
    pub fn first_acceptance(&mut self, id: &str) -> bool {
        self.accepted_ids.insert(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn a_remembered_answer_is_replayed_and_ends_the_attempts() {
        let mut keys = Idempotency::default();
        assert_eq!((keys.attempt("k"), keys.attempt("k")), (1, 2));
        assert_eq!(keys.replay("k"), None);
        let answer = Answer::error(StatusCode::BAD_REQUEST, "refused");
        assert_eq!(keys.remember("k", answer.clone()), answer);
        let again = keys.replay("k").expect("remembered");
        assert!(again.replayed);
        assert_eq!((again.status, again.body), (answer.status, answer.body));
        assert_eq!(keys.attempt("k"), 1, "the count starts over");
        assert_eq!(keys.replay("other"), None);
    }

    #[test]
    fn a_document_accepted_again_is_noticed() {
        let mut keys = Idempotency::default();
        assert!(keys.first_acceptance("d1"));
        assert!(keys.first_acceptance("d2"));
        assert!(!keys.first_acceptance("d1"));
    }
}
