//! The SQL a listing becomes on SQLite: `json_extract` expressions on the
//! documents' text, written the same way for queries and for the declared
//! indexes (so that an index is used by the queries it was made for), with
//! the request's values as parameters. Runs nothing; `sqlite.rs` does.

use rusqlite::types::{Value, ValueRef};

use super::query::{sql_literal, validate_field, Filter, FilterValue, Op, Order, Page, SortValue, FOREIGN_CURSOR};

/// The condition that continues a listing after `page`, with its parameters.
pub(super) fn continue_after(order: Option<&Order>, page: &Page) -> Result<Option<(String, Vec<Value>)>, String> {
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
        (false, v) => {
            let v = to_sql(v)?;
            (format!("({x} > ? OR ({x} = ? AND key > ?))"), vec![v.clone(), v, key.clone().into()])
        }
        (true, SortValue::Null) => (format!("({x} IS NULL AND key < ?)"), vec![key.clone().into()]),
        (true, v) => {
            let v = to_sql(v)?;
            (format!("({x} < ? OR ({x} = ? AND key < ?) OR {x} IS NULL)"), vec![v.clone(), v, key.clone().into()])
        }
    };
    Ok(Some((sql, values)))
}

/// The ordering field's value in a result row's column `index`.
pub(super) fn sort_value(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<SortValue> {
    Ok(from_sql(row.get_ref(index)?))
}

/// The WHERE clause selecting `collection`'s documents that pass every filter, with its parameters.
pub(super) fn where_clause(collection: &str, filters: &[Filter]) -> anyhow::Result<(String, Vec<Value>)> {
    // The collection is a literal (not a parameter) so that SQLite can match
    // the partial indexes, whose WHERE names it.
    let mut sql = format!("WHERE collection = {}", sql_literal(collection));
    let mut values: Vec<Value> = Vec::new();
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

/// `address.city` -> `$.address.city`, refusing anything but plain names.
fn json_path(field: &str) -> anyhow::Result<String> {
    validate_field(field).map_err(anyhow::Error::msg)?;
    Ok(format!("$.{}", field.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(".")))
}

/// A stored value as a cursor carries it.
fn from_sql(value: ValueRef<'_>) -> SortValue {
    match value {
        ValueRef::Null => SortValue::Null,
        ValueRef::Integer(n) => SortValue::Integer(n),
        ValueRef::Real(x) => SortValue::Real(x),
        ValueRef::Text(t) | ValueRef::Blob(t) => SortValue::Text(String::from_utf8_lossy(t).into_owned()),
    }
}

/// A cursor's value as a parameter; a PostgreSQL cursor's is refused.
fn to_sql(value: &SortValue) -> Result<Value, String> {
    Ok(match value {
        SortValue::Null => Value::Null,
        SortValue::Integer(n) => (*n).into(),
        SortValue::Real(x) => (*x).into(),
        SortValue::Text(t) => t.clone().into(),
        SortValue::Json(_) => return Err(FOREIGN_CURSOR.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(values, [Value::Text("Paris".into())]);
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
        use Value;
        assert_eq!(
            values,
            [Value::Integer(1), Value::Real(2.5), Value::Integer(1), Value::Integer(0), Value::Text("x".into())]
        );
        let bad = [Filter { path: "a'b".into(), op: Op::Eq, value: FilterValue::Integer(1) }];
        assert!(where_clause("users", &bad).is_err(), "a path that could break out of the literal");
    }
}
