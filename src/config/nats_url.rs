//! `nats.url`: one server or a comma-separated list of them, checked when the configuration
//! is loaded so that a typo is a clear error at start, not a connect error naming a URL
//! parser's complaint.

use nats_pull::{redact, servers};

/// Every entry of `url` must be what async-nats accepts: `[scheme://][user[:password]@]host[:port]`
/// with the scheme `nats`, `tls`, `ws` or `wss` (no scheme means `nats`, no port 4222). The
/// error names the entry, its password hidden.
pub fn check(url: &str) -> Result<(), String> {
    let list = servers(url);
    if list.is_empty() {
        return Err("nats.url names no server".into());
    }
    for (i, entry) in list.iter().enumerate() {
        if let Err(e) = entry.parse::<async_nats::ServerAddr>() {
            let which = if list.len() > 1 {
                format!(" (entry {} of {})", i + 1, list.len())
            } else {
                String::new()
            };
            return Err(format!(
                "nats.url {:?}{which} is not a server address: {e}",
                redact(entry)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_or_a_list_with_or_without_schemes_and_credentials() {
        for ok in [
            "127.0.0.1:4222",
            "localhost",
            "nats://127.0.0.1:4331,127.0.0.1:4332, tls://h3:4333",
            "nats://ingest:secret@h1:4222,h2",
            "[::1]:4222,",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_bad_entry_is_named_without_its_password() {
        let err = check("127.0.0.1:4331,http://u:hunter2@h2:80").unwrap_err();
        assert!(err.contains("entry 2 of 2"), "{err}");
        assert!(err.contains("u:***@h2"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("scheme"), "{err}");
        let err = check("h1:43x1").unwrap_err();
        assert!(err.contains("h1:43x1") && !err.contains("entry"), "{err}");
        assert_eq!(check(" , "), Err("nats.url names no server".into()));
        assert!(check("").is_err());
    }

    #[test]
    fn loading_a_configuration_checks_the_list() {
        let ok = "[nats]\nurl = \"127.0.0.1:4331,127.0.0.1:4332,127.0.0.1:4333\"\n";
        assert!(crate::config::Config::parse(ok).is_ok());
        let err = crate::config::Config::parse("[nats]\nurl = \"127.0.0.1:4331,ftp://h\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nats.url") && err.contains("ftp://h"), "{err}");
    }
}
