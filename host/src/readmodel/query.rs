//! What a listing asks of a read model, whichever backend keeps it: filters
//! on dotted JSON paths, an order, a page, a time limit. Field paths are
//! validated once here, so that each backend can embed them in its SQL; the
//! SQL itself is each backend's (`sqlite_sql.rs`, `postgres_sql.rs`). Runs
//! nothing.

/// A comparison on a JSON field of the documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Dotted path, e.g. `address.city`.
    pub path: String,
    /// The comparison.
    pub op: Op,
    /// The value compared with: a number, a string, or a boolean.
    pub value: FilterValue,
}

/// A filter's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// The value side of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    /// An integer.
    Integer(i64),
    /// A decimal number.
    Real(f64),
    /// A string.
    Text(String),
    /// A boolean (JSON `true`/`false`, which SQLite extracts as 1/0).
    Bool(bool),
}

/// Ordering by a JSON field, with the key breaking ties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Dotted path.
    pub path: String,
    /// Largest first.
    pub descending: bool,
}

/// Where a listing continues.
#[derive(Debug, Clone, PartialEq)]
pub enum Page {
    /// After this key (key order only).
    AfterKey(Option<String>),
    /// After this document of a listing ordered by a field: the field's value
    /// in it and its key (keyset paging: a deep page costs what the first does).
    After {
        /// The ordering field's value in the last document of the previous page.
        value: SortValue,
        /// That document's key.
        key: String,
    },
}

/// The value of the ordering field in a document, as the backend compares
/// it: SQLite's are `Null`, `Integer`, `Real` and `Text`; PostgreSQL's are
/// `Null` and `Json`. A backend refuses a cursor carrying the other's kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    /// The field is missing (on SQLite, or JSON `null`).
    Null,
    /// An integer (SQLite; booleans extract as 0 and 1).
    Integer(i64),
    /// A decimal number (SQLite).
    Real(f64),
    /// Text (SQLite; objects and arrays extract as their JSON text).
    Text(String),
    /// Any value that is there, JSON `null` included, as PostgreSQL prints
    /// it from JSONB (PostgreSQL).
    Json(String),
}

/// A listing request.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Every filter must pass.
    pub filters: Vec<Filter>,
    /// Order by a field instead of by key.
    pub order: Option<Order>,
    /// Most documents returned.
    pub limit: usize,
    /// Where to continue.
    pub page: Page,
    /// Longest the query may run before it is cut off ([`QueryError::TooSlow`]).
    pub time_limit: Option<std::time::Duration>,
}

impl Default for Query {
    fn default() -> Self {
        Query { filters: Vec::new(), order: None, limit: 100, page: Page::AfterKey(None), time_limit: None }
    }
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// It ran past its time limit and was interrupted.
    #[error("the query ran longer than its limit of {0:?}")]
    TooSlow(std::time::Duration),
    /// The request cannot be run as given (a key cursor on an ordered
    /// listing, a cursor another backend made, a bad path).
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Why a backend refuses a cursor carrying the other backend's kind of value.
pub(super) const FOREIGN_CURSOR: &str = "this cursor was not made by this read model";

/// Checks that a field path is dot-separated plain names, so it can be
/// embedded in SQL.
pub fn validate_field(field: &str) -> Result<(), String> {
    let valid =
        |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if field.split('.').all(valid) {
        Ok(())
    } else {
        Err(format!("field '{field}' must be dot-separated names of letters, digits, '_' or '-'"))
    }
}

/// `value` as an SQL string literal (SQLite and PostgreSQL alike: quotes doubled).
pub(super) fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A stable 64-bit hash (FNV-1a), for index names.
pub(super) fn fnv(value: &str) -> u64 {
    value.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_are_dot_separated_plain_names() {
        for field in ["email", "address.city", "a.b.c", "snake_case", "kebab-case", "-x", "_", "9", "a.9.b"] {
            assert_eq!(validate_field(field), Ok(()), "{field}");
        }
        for field in ["", ".", "a.", ".a", "a..b", "a b", "a'b", "a\"b", "a[0]", "a$", "é", "a;--", "a\u{0}b"] {
            let refused = validate_field(field).expect_err(field);
            assert_eq!(refused, format!("field '{field}' must be dot-separated names of letters, digits, '_' or '-'"));
        }
    }

    #[test]
    fn sql_literals_double_their_quotes() {
        assert_eq!(sql_literal("users"), "'users'");
        assert_eq!(sql_literal("it's"), "'it''s'");
        assert_eq!(sql_literal("'; DROP TABLE documents; --"), "'''; DROP TABLE documents; --'");
        assert_eq!(sql_literal(""), "''");
    }

    #[test]
    fn index_names_hash_stably() {
        // FNV-1a's published test values: index names must not change between releases.
        assert_eq!(fnv(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv("foobar"), 0x8594_4171_f739_67e8);
        assert_ne!(fnv("users\u{0}email"), fnv("users\u{0}username"));
    }
}
