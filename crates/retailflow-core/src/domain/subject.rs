//! The subject scheme. Events: `retail.v1.<system>.<location>.<kind>`, where `system` is one of
//! the systems the events stream captures (see [`crate::config::StreamsConfig`]). Everything
//! else retailflow publishes lives under names no events stream captures.

/// Prefix of every subject.
pub const ROOT: &str = "retail.v1";
/// Availability queries (request-reply, JSON).
pub const ATP_QUERY: &str = "retail.v1.atp.query";
/// Reservation requests (request-reply, JSON).
pub const ATP_RESERVE: &str = "retail.v1.atp.reserve";
/// Reservation releases (request-reply, JSON).
pub const ATP_RELEASE: &str = "retail.v1.atp.release";
/// Prefix of the availability change feed: `retail.v1.atp.changed.<sku>`.
pub const ATP_CHANGED: &str = "retail.v1.atp.changed";
/// Published when every cached availability answer may be stale (retailflow restarted and
/// replayed, or a channel definition changed): caches drop what they hold.
pub const ATP_RESET: &str = "retail.v1.atp.reset";
/// Prefix of dead letters: `retail.v1.dlq.<stage>.<reason>`.
pub const DLQ: &str = "retail.v1.dlq";
/// Prefix of the postings outbox: `retail.v1.postings.<endpoint>.<document kind>`.
pub const POSTINGS: &str = "retail.v1.postings";
/// The ERP's answers per document: `retail.v1.finance.outcome.<endpoint>`.
pub const FINANCE_OUTCOME: &str = "retail.v1.finance.outcome";
/// Audit records of operators' actions: `retail.v1.audit.redrive.<dead-letter sequence>`.
pub const AUDIT_REDRIVE: &str = "retail.v1.audit.redrive";
/// Barriers published by retailflow into its own events stream.
pub const BARRIER: &str = "retail.v1.ctl.all.barrier";
/// Reservation requests and releases published by the API into the events stream.
pub const API_EVENTS: &str = "retail.v1.api";

/// Systems only retailflow publishes on; every other system is a producer's.
pub const OWN_SYSTEMS: [&str; 2] = ["api", "ctl"];

/// Whether `env` may arrive on `subject` (bytes as the server sent them). The subject must be
/// `retail.v1.<system>.<location>.<kind>` with the event's kind; retailflow's own kinds
/// ([`Event::is_own`](super::Event::is_own)) only on its own systems and nothing else there;
/// on a producer's system, the source id must start with that system (`pos/s1/t3` on
/// `retail.v1.pos.>`). The location token is not compared. Own subjects are guarded by NATS
/// permissions (only retailflow may publish there), so their source is not compared either:
/// the expiry timer publishes as `expiry/...` on `retail.v1.api`.
pub fn check_binding(subject: &[u8], env: &super::Envelope) -> Result<(), String> {
    let mut tokens = subject.split(|&b| b == b'.');
    let shape = (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    );
    let (system, kind) = match shape {
        (Some(b"retail"), Some(b"v1"), Some(system), Some(_), Some(kind), None) => (system, kind),
        _ => {
            return Err(format!(
                "subject {} is not {ROOT}.<system>.<location>.<kind>",
                String::from_utf8_lossy(subject)
            ));
        }
    };
    let event_kind = env.event.kind();
    if kind != event_kind.as_bytes() {
        return Err(format!(
            "subject {} names kind {} but the event is a {event_kind}",
            String::from_utf8_lossy(subject),
            String::from_utf8_lossy(kind)
        ));
    }
    let own_system = OWN_SYSTEMS.iter().any(|s| s.as_bytes() == system);
    match (own_system, env.event.is_own()) {
        (true, true) => Ok(()),
        (true, false) => Err(format!(
            "subject {} is retailflow's own; producers' {event_kind} events belong on retail.v1.<system>.>",
            String::from_utf8_lossy(subject)
        )),
        (false, true) => Err(format!(
            "{event_kind} is a kind only retailflow publishes; not accepted on producer subject {}",
            String::from_utf8_lossy(subject)
        )),
        (false, false) if env.system().as_bytes() != system => Err(format!(
            "source {} belongs to system {:?} but subject {} is system {}",
            env.source,
            env.system(),
            String::from_utf8_lossy(subject),
            String::from_utf8_lossy(system)
        )),
        (false, false) => Ok(()),
    }
}

/// `retail.v1.<system>.<location>.<kind>`.
pub fn event(system: &str, location: &str, kind: &str) -> String {
    format!("{ROOT}.{system}.{location}.{kind}")
}

pub fn dead_letter(stage: &str, reason: &str) -> String {
    format!("{DLQ}.{stage}.{reason}")
}

pub fn posting(endpoint: &str, kind: &str) -> String {
    format!("{POSTINGS}.{endpoint}.{kind}")
}

pub fn changed(sku: &str) -> String {
    format!("{ATP_CHANGED}.{sku}")
}
