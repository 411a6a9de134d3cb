//! How the run's vocabulary ([`crate::run`]) is bound to SQL: each closed set
//! is stored as its name, and a name the binary does not know (a database
//! written by a newer ftsweep, or edited by hand) is an error that names it,
//! never a default.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::run::{EvalKind, OriginKind, ProviderKind, RunState, SweepRole};

/// A stored name this binary does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} `{name}` in the database (written by a newer ftsweep?)")]
pub struct UnknownName {
    what: &'static str,
    name: String,
}

macro_rules! named {
    ($ty:ty, $what:literal) => {
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let name = value.as_str()?;
                name.parse().map_err(|_| FromSqlError::Other(Box::new(UnknownName { what: $what, name: name.into() })))
            }
        }
    };
}

named!(RunState, "run state");
named!(SweepRole, "sweep role");
named!(EvalKind, "evaluation kind");
named!(ProviderKind, "provider");

impl OriginKind {
    fn as_str(self) -> &'static str {
        self.into()
    }
}

named!(OriginKind, "run origin");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_state_is_an_error_that_names_it() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let e = conn.query_row("SELECT 'paused'", [], |r| r.get::<_, RunState>(0)).unwrap_err();
        assert!(e.to_string().contains("unknown run state `paused`"), "{e}");
        let ok: RunState = conn.query_row("SELECT ?1", [RunState::Evaluating], |r| r.get(0)).unwrap();
        assert_eq!(ok, RunState::Evaluating);
    }
}
