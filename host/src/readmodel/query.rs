//! What a listing asks of a read model, and the SQL it becomes: filters on
//! dotted JSON paths, an order, a page; field paths validated once here and
//! turned into SQLite JSON expressions shared by queries and indexes (so an
//! index is used by the queries it was made for). Runs nothing; `mod.rs`
//! executes the SQL.

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

/// The value of the ordering field in a document, as SQLite compares it.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    /// The field is missing (or JSON `null`).
    Null,
    /// An integer (booleans extract as 0 and 1).
    Integer(i64),
    /// A decimal number.
    Real(f64),
    /// Text (objects and arrays extract as their JSON text).
    Text(String),
}

impl SortValue {
    fn from_sql(value: rusqlite::types::ValueRef<'_>) -> SortValue {
        use rusqlite::types::ValueRef;
        match value {
            ValueRef::Null => SortValue::Null,
            ValueRef::Integer(n) => SortValue::Integer(n),
            ValueRef::Real(x) => SortValue::Real(x),
            ValueRef::Text(t) | ValueRef::Blob(t) => SortValue::Text(String::from_utf8_lossy(t).into_owned()),
        }
    }

    fn to_sql(&self) -> rusqlite::types::Value {
        match self {
            SortValue::Null => rusqlite::types::Value::Null,
            SortValue::Integer(n) => (*n).into(),
            SortValue::Real(x) => (*x).into(),
            SortValue::Text(t) => t.clone().into(),
        }
    }
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
    /// The request cannot be run as given (a key cursor on an ordered listing, a bad path).
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// The condition that continues a listing after `page`, with its parameters.
pub(super) fn continue_after(
    order: Option<&Order>,
    page: &Page,
) -> Result<Option<(String, Vec<rusqlite::types::Value>)>, String> {
    let (order, value, key) = match (order, page) {
        (_, Page::AfterKey(None)) => return Ok(None),
        (None, Page::AfterKey(Some(after))) => return Ok(Some(("key > ?".into(), vec![after.clone().into()]))),
        (Some(_), Page::AfterKey(Some(_))) => return Err("a key cursor cannot continue an ordered listing".into()),
        (None, Page::After { .. }) => return Err("an ordered cursor cannot continue a listing in key order".into()),
        (Some(order), Page::After { value, key }) => (order, value, key),
    };
    let x = extract(&order.path).map_err(|e| e.to_string())?;
    // SQLite sorts NULL (a missing field) first in ascending order, last in descending.
    let (sql, values) = match (order.descending, value) {
        (false, SortValue::Null) => {
            (format!("(({x} IS NULL AND key > ?) OR {x} IS NOT NULL)"), vec![key.clone().into()])
        }
        (false, v) => (format!("({x} > ? OR ({x} = ? AND key > ?))"), vec![v.to_sql(), v.to_sql(), key.clone().into()]),
        (true, SortValue::Null) => (format!("({x} IS NULL AND key < ?)"), vec![key.clone().into()]),
        (true, v) => (
            format!("({x} < ? OR ({x} = ? AND key < ?) OR {x} IS NULL)"),
            vec![v.to_sql(), v.to_sql(), key.clone().into()],
        ),
    };
    Ok(Some((sql, values)))
}

/// The ordering field's value in a result row's column `index`.
pub(super) fn sort_value(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<SortValue> {
    Ok(SortValue::from_sql(row.get_ref(index)?))
}

pub(super) fn where_clause(
    collection: &str,
    filters: &[Filter],
) -> anyhow::Result<(String, Vec<rusqlite::types::Value>)> {
    // The collection is a literal (not a parameter) so that SQLite can match
    // the partial indexes, whose WHERE names it.
    let mut sql = format!("WHERE collection = {}", sql_literal(collection));
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    for filter in filters {
        let op = match filter.op {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        };
        sql.push_str(&format!(" AND {} {op} ?", extract(&filter.path)?));
        values.push(match &filter.value {
            FilterValue::Integer(n) => (*n).into(),
            FilterValue::Real(x) => (*x).into(),
            FilterValue::Text(t) => t.clone().into(),
            FilterValue::Bool(b) => i64::from(*b).into(),
        });
    }
    Ok((sql, values))
}

/// The SQL expression for a field, written exactly as the indexes are so
/// SQLite can use them.
pub(super) fn extract(field: &str) -> anyhow::Result<String> {
    Ok(format!("json_extract(doc, {})", sql_literal(&json_path(field)?)))
}

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

/// `address.city` -> `$.address.city`, refusing anything but plain names.
fn json_path(field: &str) -> anyhow::Result<String> {
    validate_field(field).map_err(anyhow::Error::msg)?;
    Ok(format!("$.{}", field.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(".")))
}

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
    fn json_paths_quote_each_name_and_refuse_what_validation_refuses() {
        assert_eq!(json_path("email").expect("valid"), r#"$."email""#);
        assert_eq!(json_path("address.city").expect("valid"), r#"$."address"."city""#);
        assert_eq!(json_path("a-b.c_d.9").expect("valid"), r#"$."a-b"."c_d"."9""#);
        for field in ["", "a..b", "a'b", "a\"b"] {
            assert!(json_path(field).is_err(), "{field}");
        }
    }

    #[test]
    fn the_extract_expression_is_the_same_for_indexes_and_queries() {
        assert_eq!(extract("address.city").expect("valid"), r#"json_extract(doc, '$."address"."city"')"#);
        let (sql, values) = where_clause(
            "users",
            &[Filter { path: "address.city".into(), op: Op::Ne, value: FilterValue::Text("Paris".into()) }],
        )
        .expect("valid");
        assert_eq!(sql, format!("WHERE collection = 'users' AND {} != ?", extract("address.city").expect("valid")));
        assert_eq!(values, [rusqlite::types::Value::Text("Paris".into())]);
    }

    #[test]
    fn filters_become_one_comparison_each_with_their_values_as_parameters() {
        let filter = |op, value| Filter { path: "n".into(), op, value };
        let filters = [
            filter(Op::Eq, FilterValue::Integer(1)),
            filter(Op::Lt, FilterValue::Real(2.5)),
            filter(Op::Le, FilterValue::Bool(true)),
            filter(Op::Gt, FilterValue::Bool(false)),
            filter(Op::Ge, FilterValue::Text("x".into())),
        ];
        let (sql, values) = where_clause("it's", &filters).expect("valid");
        let n = r#"json_extract(doc, '$."n"')"#;
        assert_eq!(
            sql,
            format!("WHERE collection = 'it''s' AND {n} = ? AND {n} < ? AND {n} <= ? AND {n} > ? AND {n} >= ?")
        );
        use rusqlite::types::Value;
        assert_eq!(
            values,
            [Value::Integer(1), Value::Real(2.5), Value::Integer(1), Value::Integer(0), Value::Text("x".into())]
        );
        let bad = [Filter { path: "a'b".into(), op: Op::Eq, value: FilterValue::Integer(1) }];
        assert!(where_clause("users", &bad).is_err(), "a path that could break out of the literal");
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
