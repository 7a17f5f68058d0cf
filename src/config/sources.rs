//! `streams.sources`: streams in other JetStream domains (stores on leaf nodes) that the
//! events stream copies from, and their checks.

use serde::{Deserialize, Serialize};

/// A stream in another JetStream domain whose events the events stream copies, each once and
/// in its order, also after the link to it was down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// JetStream domain of the server holding the stream (the store's `jetstream { domain }`).
    /// Required.
    pub domain: String,
    /// Name of the stream in that domain.
    #[serde(default = "SourceConfig::default_stream")]
    pub stream: String,
}

impl SourceConfig {
    fn default_stream() -> String {
        "STORE".into()
    }

    /// The JetStream API prefix of the source's domain, as a stream source's `external.api`.
    pub fn api_prefix(&self) -> String {
        format!("$JS.{}.API", self.domain)
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            domain: String::new(),
            stream: SourceConfig::default_stream(),
        }
    }
}

/// Each source names a domain and a stream that JetStream accepts, and none twice.
pub(super) fn check(sources: &[SourceConfig]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (i, s) in sources.iter().enumerate() {
        let which = format!("streams.sources[{i}]");
        if s.domain.is_empty() {
            return Err(format!(
                "{which}: domain is missing (the JetStream domain of the store's server)"
            ));
        }
        if let Some(ch) = s
            .domain
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && !matches!(c, '-' | '_'))
        {
            return Err(format!(
                "{which}: domain {:?} may hold only letters, digits, '-' and '_', not {ch:?}",
                s.domain
            ));
        }
        if s.stream.is_empty() {
            return Err(format!("{which}: stream is empty"));
        }
        if let Some(ch) = s
            .stream
            .chars()
            .find(|c| !c.is_ascii_graphic() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            return Err(format!(
                "{which}: stream {:?} may not hold {ch:?}",
                s.stream
            ));
        }
        if s.domain.len() > 64 || s.stream.len() > 255 {
            return Err(format!(
                "{which}: domain (64) or stream name (255) too long"
            ));
        }
        if !seen.insert((&s.domain, &s.stream)) {
            return Err(format!(
                "{which}: stream {} in domain {} is listed twice",
                s.stream, s.domain
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn sources_name_a_domain_and_default_to_the_store_stream() {
        let c = Config::parse(
            "[[streams.sources]]\ndomain = \"s0042\"\n\
             [[streams.sources]]\ndomain = \"s0043\"\nstream = \"TILLS\"\n",
        )
        .unwrap();
        assert_eq!(c.streams.sources.len(), 2);
        assert_eq!(c.streams.sources[0].stream, "STORE");
        assert_eq!(c.streams.sources[0].api_prefix(), "$JS.s0042.API");
        assert_eq!(c.streams.sources[1].stream, "TILLS");
        assert!(Config::parse("").unwrap().streams.sources.is_empty());

        let refused = |toml: &str| Config::parse(toml).unwrap_err().to_string();
        let err = refused("[[streams.sources]]\nstream = \"STORE\"\n");
        assert!(err.contains("domain"), "{err}");
        let err = refused("[[streams.sources]]\ndomain = \"\"\n");
        assert!(
            err.contains("streams.sources[0]: domain is missing"),
            "{err}"
        );
        let err = refused("[[streams.sources]]\ndomain = \"s.42\"\n");
        assert!(err.contains("'.'"), "{err}");
        let err = refused("[[streams.sources]]\ndomain = \"s42\"\nstream = \"A B\"\n");
        assert!(err.contains("stream \"A B\""), "{err}");
        let err = refused(
            "[[streams.sources]]\ndomain = \"s42\"\n[[streams.sources]]\ndomain = \"s42\"\n",
        );
        assert!(
            err.contains("streams.sources[1]") && err.contains("twice"),
            "{err}"
        );
        let err = refused("[[streams.sources]]\ndomain = \"s42\"\nname = \"x\"\n");
        assert!(err.contains("name"), "unknown fields are refused: {err}");
    }
}
