//! The SQL a listing becomes on PostgreSQL: `(doc #> '{"a","b"}')`
//! expressions on the JSONB documents, written the same way for queries and
//! for the declared indexes (so that the planner matches an index with the
//! queries it was made for), with the request's values as text parameters
//! cast to JSONB in SQL. Runs nothing; `postgres.rs` does.
//!
//! Every parameter is text: documents and values travel as JSON text and
//! PostgreSQL parses them, so the host never parses a document.

use anyhow::Context;

use super::query::{sql_literal, validate_field, Filter, FilterValue, Op, Order, Page, SortValue, FOREIGN_CURSOR};

/// A statement's parameters, all text, numbered in the order they are added.
#[derive(Debug, Default)]
pub(super) struct Params(Vec<String>);

impl Params {
    /// Adds `value`; returns its placeholder, typed as text (`$3::text`).
    pub(super) fn push(&mut self, value: String) -> String {
        self.0.push(value);
        format!("${}::text", self.0.len())
    }

    /// The values, as the driver takes them.
    pub(super) fn as_sql(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        self.0.iter().map(|value| value as &(dyn tokio_postgres::types::ToSql + Sync)).collect()
    }
}

/// The SQL expression for a field (SQL NULL when the field is missing),
/// written exactly as the indexes are so that the planner can use them.
pub(super) fn field(path: &str) -> anyhow::Result<String> {
    validate_field(path).map_err(anyhow::Error::msg)?;
    // Each name quoted inside the array literal: unquoted, a name such as
    // `null` would be an SQL NULL element. Validation leaves no quote or
    // backslash that could end the quoting.
    let names = path.split('.').map(|name| format!("\"{name}\"")).collect::<Vec<_>>().join(",");
    Ok(format!("(doc #> {})", sql_literal(&format!("{{{names}}}"))))
}

/// The WHERE clause selecting `collection`'s documents that pass every filter.
/// Refused (a message): a bad path, a number JSON cannot hold, text with a NUL character.
pub(super) fn where_clause(collection: &str, filters: &[Filter], params: &mut Params) -> Result<String, String> {
    // The collection is a literal (not a parameter) so that the planner can
    // match the partial indexes, whose WHERE names it.
    let mut sql = format!("WHERE collection = {}", sql_literal(collection));
    for filter in filters {
        let x = field(&filter.path).map_err(|e| e.to_string())?;
        let (value, json_type) = json_value(&filter.value)?;
        let v = format!("{}::jsonb", params.push(value));
        let condition = match filter.op {
            // JSONB compares numbers as numbers: 198 = 198.0 = 1.98e2.
            Op::Eq => format!("{x} = {v}"),
            // A missing field (SQL NULL) never passes; JSON null must not either.
            Op::Ne => format!("{x} <> {v} AND {x} <> 'null'::jsonb"),
            // JSONB orders every value, strings below numbers below booleans:
            // a range only holds values of the filter value's own type.
            Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                let op = match filter.op {
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    _ => ">=",
                };
                format!("jsonb_typeof({x}) = '{json_type}' AND {x} {op} {v}")
            }
        };
        sql.push_str(&format!(" AND {condition}"));
    }
    Ok(sql)
}

/// The condition that continues a listing after `page`.
pub(super) fn continue_after(
    order: Option<&Order>,
    page: &Page,
    params: &mut Params,
) -> Result<Option<String>, String> {
    // No key or JSONB text holds a NUL character: not a cursor of this read model.
    let nul = match page {
        Page::AfterKey(key) => key.as_ref().is_some_and(|key| key.contains('\0')),
        Page::After { value: SortValue::Json(json), key } => json.contains('\0') || key.contains('\0'),
        Page::After { key, .. } => key.contains('\0'),
    };
    if nul {
        return Err(FOREIGN_CURSOR.into());
    }
    let (order, value, key) = match (order, page) {
        (_, Page::AfterKey(None)) => return Ok(None),
        (None, Page::AfterKey(Some(after))) => return Ok(Some(format!("key > {}", params.push(after.clone())))),
        (Some(_), Page::AfterKey(Some(_))) => return Err("a key cursor cannot continue an ordered listing".into()),
        (None, Page::After { .. }) => return Err("an ordered cursor cannot continue a listing in key order".into()),
        (Some(order), Page::After { value, key }) => (order, value, key),
    };
    let x = field(&order.path).map_err(|e| e.to_string())?;
    // Missing fields (SQL NULL) come first in ascending order, last in
    // descending (`ORDER BY` says so explicitly), as on SQLite.
    let sql = match (order.descending, value) {
        (false, SortValue::Null) => {
            format!("(({x} IS NULL AND key > {}) OR {x} IS NOT NULL)", params.push(key.clone()))
        }
        (true, SortValue::Null) => format!("({x} IS NULL AND key < {})", params.push(key.clone())),
        (descending, SortValue::Json(json)) => {
            let v = format!("{}::jsonb", params.push(json.clone()));
            let k = params.push(key.clone());
            if descending {
                format!("({x} < {v} OR ({x} = {v} AND key < {k}) OR {x} IS NULL)")
            } else {
                format!("({x} > {v} OR ({x} = {v} AND key > {k}))")
            }
        }
        (_, SortValue::Integer(_) | SortValue::Real(_) | SortValue::Text(_)) => return Err(FOREIGN_CURSOR.into()),
    };
    Ok(Some(sql))
}

/// `ORDER BY` for a listing, and the expression whose text is each row's sort value.
pub(super) fn order_by(order: Option<&Order>) -> anyhow::Result<(String, String)> {
    Ok(match order {
        Some(Order { path, descending: false }) => {
            let x = field(path)?;
            (format!("ORDER BY {x} ASC NULLS FIRST, key ASC"), format!("{x}::text"))
        }
        Some(Order { path, descending: true }) => {
            let x = field(path)?;
            (format!("ORDER BY {x} DESC NULLS LAST, key DESC"), format!("{x}::text"))
        }
        None => ("ORDER BY key".to_owned(), "NULL::text".to_owned()),
    })
}

/// A filter's value as JSON text, and its `jsonb_typeof`.
fn json_value(value: &FilterValue) -> Result<(String, &'static str), String> {
    Ok(match value {
        FilterValue::Integer(n) => (n.to_string(), "number"),
        FilterValue::Real(x) if x.is_finite() => (serde_json::Value::from(*x).to_string(), "number"),
        FilterValue::Real(x) => return Err(format!("{x} is not a number JSON can hold")),
        FilterValue::Text(text) if text.contains('\0') => {
            return Err("PostgreSQL holds no text with a NUL character, nor compares with one".into())
        }
        FilterValue::Text(text) => (serde_json::Value::from(text.as_str()).to_string(), "string"),
        FilterValue::Bool(b) => (b.to_string(), "boolean"),
    })
}

/// The documents table of the read model with row `id`.
pub(super) fn table(id: i64) -> String {
    format!("projector.documents_{id}")
}

/// A dead letter's text as PostgreSQL's text can hold it: a NUL character
/// (which a guest's error message may carry) becomes U+FFFD.
pub(super) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}").into()
    } else {
        text.into()
    }
}

/// A position or counter as PostgreSQL's BIGINT holds it.
pub(super) fn bigint(value: u64) -> anyhow::Result<i64> {
    i64::try_from(value).with_context(|| format!("{value} is past the largest number PostgreSQL's BIGINT holds"))
}

/// A stored BIGINT as the position or counter it is.
pub(super) fn unsigned(value: i64) -> anyhow::Result<u64> {
    u64::try_from(value).with_context(|| format!("a stored position or counter is negative: {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_expressions_quote_each_name_and_refuse_what_validation_refuses() {
        assert_eq!(field("email").expect("valid"), r#"(doc #> '{"email"}')"#);
        assert_eq!(field("address.city").expect("valid"), r#"(doc #> '{"address","city"}')"#);
        assert_eq!(field("null.9.a-b").expect("valid"), r#"(doc #> '{"null","9","a-b"}')"#);
        for path in ["", "a..b", "a'b", "a\"b", "a}b", "a,b", "a\\b"] {
            assert!(field(path).is_err(), "{path}");
        }
    }

    #[test]
    fn filters_become_typed_jsonb_comparisons_with_their_values_as_parameters() {
        let filter = |op, value| Filter { path: "n".into(), op, value };
        let filters = [
            filter(Op::Eq, FilterValue::Integer(1)),
            filter(Op::Ne, FilterValue::Text("it's \"x\"".into())),
            filter(Op::Lt, FilterValue::Real(2.5)),
            filter(Op::Ge, FilterValue::Bool(true)),
        ];
        let mut params = Params::default();
        let sql = where_clause("it's", &filters, &mut params).expect("valid");
        let n = r#"(doc #> '{"n"}')"#;
        assert_eq!(
            sql,
            format!(
                "WHERE collection = 'it''s' AND {n} = $1::text::jsonb \
                 AND {n} <> $2::text::jsonb AND {n} <> 'null'::jsonb \
                 AND jsonb_typeof({n}) = 'number' AND {n} < $3::text::jsonb \
                 AND jsonb_typeof({n}) = 'boolean' AND {n} >= $4::text::jsonb"
            )
        );
        assert_eq!(params.0, ["1", r#""it's \"x\"""#, "2.5", "true"]);
        let bad = [Filter { path: "a'b".into(), op: Op::Eq, value: FilterValue::Integer(1) }];
        assert!(where_clause("users", &bad, &mut Params::default()).is_err());
        let nan = [Filter { path: "n".into(), op: Op::Eq, value: FilterValue::Real(f64::NAN) }];
        assert!(where_clause("users", &nan, &mut Params::default()).is_err());
        let nul = [Filter { path: "n".into(), op: Op::Eq, value: FilterValue::Text("a\0".into()) }];
        assert!(where_clause("users", &nul, &mut Params::default()).is_err());
    }

    #[test]
    fn a_cursor_continues_with_the_order_and_refuses_sqlite_values() {
        let ascending = Order { path: "v".into(), descending: false };
        let after = |value| Page::After { value, key: "k".into() };
        let mut params = Params::default();
        let sql = continue_after(Some(&ascending), &after(SortValue::Json("1.5".into())), &mut params);
        let v = r#"(doc #> '{"v"}')"#;
        assert_eq!(sql, Ok(Some(format!("({v} > $1::text::jsonb OR ({v} = $1::text::jsonb AND key > $2::text))"))));
        assert_eq!(params.0, ["1.5", "k"]);
        let nul = continue_after(None, &Page::AfterKey(Some("a\0".into())), &mut Params::default());
        assert_eq!(nul, Err(FOREIGN_CURSOR.to_owned()));
        for value in
            [SortValue::Integer(1), SortValue::Real(1.5), SortValue::Text("x".into()), SortValue::Json("\"\0\"".into())]
        {
            let refused = continue_after(Some(&ascending), &after(value), &mut Params::default());
            assert_eq!(refused, Err(FOREIGN_CURSOR.to_owned()));
        }
    }
}
