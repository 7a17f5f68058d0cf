//! The kinds of ERP endpoint (`[[erp]] kind`) and the settings each one needs.

use super::ErpEndpointConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How an ERP endpoint takes documents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErpKind {
    /// A POST per document, with an `Idempotency-Key`.
    #[default]
    Http,
    /// Rows in PostgreSQL interface tables, one transaction per document.
    Postgres,
}

/// The settings an endpoint's kind needs: a URL for HTTP, a connection string's variable and a
/// positive poll interval for PostgreSQL.
pub(super) fn check(e: &ErpEndpointConfig) -> Result<(), String> {
    match e.kind {
        ErpKind::Http if e.url.is_empty() => Err(format!(
            "erp {:?}: kind \"http\" needs a url (where documents are POSTed)",
            e.name
        )),
        ErpKind::Http if !e.url.starts_with("http://") && !e.url.starts_with("https://") => {
            Err(format!("erp {:?}: url {:?} is not http(s)", e.name, e.url))
        }
        ErpKind::Postgres if e.dsn_env.is_empty() => Err(format!(
            "erp {:?}: kind \"postgres\" needs dsn_env, the name of the environment variable \
             holding the connection string (the string itself never goes into this file)",
            e.name
        )),
        ErpKind::Postgres if e.status_poll < Duration::from_millis(100) => Err(format!(
            "erp {:?}: status_poll {:?} is too short (at least 100ms)",
            e.name, e.status_poll
        )),
        _ => Ok(()),
    }
}

/// At start-up: every postgres endpoint's `dsn_env` names a variable that is set, so a missing
/// secret stops the start with its name instead of an endpoint that restarts until it gives up.
pub(super) fn check_env(endpoints: &[ErpEndpointConfig]) -> Result<(), String> {
    for e in endpoints.iter().filter(|e| e.kind == ErpKind::Postgres) {
        if std::env::var(&e.dsn_env).map_or(true, |v| v.trim().is_empty()) {
            return Err(format!(
                "erp {:?}: the environment variable {} (dsn_env) holding the PostgreSQL \
                 connection string is not set",
                e.name, e.dsn_env
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ErpKind};

    fn error(toml: &str) -> String {
        Config::parse(toml).unwrap_err().to_string()
    }

    #[test]
    fn existing_endpoints_stay_http() {
        let c = Config::parse("[[erp]]\nname = \"d365\"\nurl = \"http://erp/api\"\n").unwrap();
        assert_eq!(c.erp[0].kind, ErpKind::Http);
    }

    #[test]
    fn a_postgres_endpoint_names_its_secret_and_needs_no_url() {
        let c = Config::parse(
            "[[erp]]\nname = \"pg\"\nkind = \"postgres\"\ndsn_env = \"RF_PG\"\nurl = \"\"\n",
        )
        .unwrap();
        assert_eq!(c.erp[0].kind, ErpKind::Postgres);
        assert_eq!(c.erp[0].dsn_env, "RF_PG");
    }

    #[test]
    fn a_kind_without_what_it_needs_is_a_clear_error() {
        let e = error("[[erp]]\nname = \"pg\"\nkind = \"postgres\"\n");
        assert!(e.contains("needs dsn_env"), "{e}");
        let e = error("[[erp]]\nname = \"h\"\nurl = \"\"\n");
        assert!(e.contains("needs a url"), "{e}");
        let e = error("[[erp]]\nname = \"h\"\nkind = \"ftp\"\n");
        assert!(e.contains("unknown variant"), "{e}");
        let e = error(
            "[[erp]]\nname = \"pg\"\nkind = \"postgres\"\ndsn_env = \"X\"\nstatus_poll = \"1ms\"\n",
        );
        assert!(e.contains("too short"), "{e}");
    }

    #[test]
    fn an_unset_connection_string_stops_the_start_with_its_name() {
        let c = Config::parse(
            "[[erp]]\nname = \"pg\"\nkind = \"postgres\"\ndsn_env = \"RF_TEST_SURELY_UNSET_PG\"\n",
        )
        .unwrap();
        let e = super::check_env(&c.erp).unwrap_err();
        assert!(e.contains("RF_TEST_SURELY_UNSET_PG"), "{e}");
    }
}
