//! What a listing asks for, parsed from its query string: the page size
//! (`limit`), filters on document fields (`filter=path<op>value`), the order
//! (`order_by=field` or `-field`), where to continue (`cursor`), read-your-
//! writes (`at_least`) and `count=true`; and the opaque cursors themselves.
//!
//! Pure parsing into the read model's [`Query`]: no I/O and no state. Field
//! paths are checked by the read model's own rule (`validate_field`), not
//! restated here; running the query is `documents`' business.

use crate::readmodel::{validate_field, Filter, FilterValue, Op, Order, Page, Query, SortValue};

use super::errors::{bad, AppError};

/// A parsed listing request.
#[derive(Debug)]
pub(super) struct ListRequest {
    /// Filters, order, page size and where to continue.
    pub(super) query: Query,
    /// The position to wait for first, if any.
    pub(super) at_least: Option<u64>,
    /// Answer with how many documents match instead of a page of them.
    pub(super) count: bool,
}

/// Where a listing goes on: past a key (key order) or past a document of a
/// listing ordered by a field (its value there and its key). Handed out as
/// opaque hex text.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cursor {
    /// The listing in key order continues after this key.
    AfterKey(String),
    /// The ordered listing continues after the document with this value and key.
    After(SortValue, String),
}

/// Most filters one listing may carry: enough for any real screen, far from
/// what makes SQLite's expression tree too deep or a scan minutes long.
pub(super) const MAX_FILTERS: usize = 16;

/// Longest one filter may be, in bytes (path, operator and value).
pub(super) const MAX_FILTER_BYTES: usize = 1024;

/// Most documents or dead letters one page holds.
const MAX_PAGE: usize = 1000;

/// A page's size as the request gave it: 1 to [`MAX_PAGE`].
pub(super) fn page_limit(given: &str) -> Result<usize, AppError> {
    given
        .parse()
        .ok()
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or_else(|| bad("invalid_limit", format!("limit '{given}' must be between 1 and {MAX_PAGE}")))
}

/// The listing's query string: `limit`, `cursor`, `at_least`, `order_by`,
/// repeated `filter`, `count`; anything else is refused.
pub(super) fn parse_list_request(raw: Option<&str>) -> Result<ListRequest, AppError> {
    let mut request = ListRequest { query: Query::default(), at_least: None, count: false };
    let mut cursor = None;
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "limit" => request.query.limit = page_limit(&value)?,
            "cursor" => cursor = Some(value.into_owned()),
            "at_least" => {
                request.at_least = Some(
                    value
                        .parse()
                        .map_err(|_| bad("invalid_position", format!("at_least '{value}' is not a position")))?,
                );
            }
            "order_by" => {
                let (path, descending) = match value.strip_prefix('-') {
                    Some(path) => (path, true),
                    None => (value.as_ref(), false),
                };
                valid_path(path)?;
                request.query.order = Some(Order { path: path.to_owned(), descending });
            }
            "filter" => {
                if request.query.filters.len() == MAX_FILTERS {
                    return Err(bad("too_many_filters", format!("a listing takes at most {MAX_FILTERS} filters")));
                }
                if value.len() > MAX_FILTER_BYTES {
                    return Err(bad(
                        "invalid_filter",
                        format!("a filter is at most {MAX_FILTER_BYTES} bytes; this one is {}", value.len()),
                    ));
                }
                request.query.filters.push(parse_filter(&value)?);
            }
            "count" => request.count = value == "true",
            other => return Err(bad("unknown_parameter", format!("unknown query parameter '{other}'"))),
        }
    }
    if let Some(cursor) = cursor {
        let invalid =
            || bad("invalid_cursor", format!("cursor '{cursor}' was not issued by this API for this listing"));
        request.query.page = match (Cursor::decode(&cursor).ok_or_else(invalid)?, &request.query.order) {
            (Cursor::AfterKey(key), None) => Page::AfterKey(Some(key)),
            (Cursor::After(value, key), Some(_)) => Page::After { value, key },
            _ => return Err(invalid()),
        };
    }
    Ok(request)
}

/// One filter: `age>=30`, `address.city=Paris`, `name="42"` (quotes force a
/// string); otherwise an integer, then a finite number, then `true`/`false`,
/// then text.
fn parse_filter(text: &str) -> Result<Filter, AppError> {
    const OPS: [(&str, Op); 6] =
        [("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("=", Op::Eq), ("<", Op::Lt), (">", Op::Gt)];
    let found = text.char_indices().find_map(|(i, _)| {
        OPS.iter().find(|(symbol, _)| text[i..].starts_with(symbol)).map(|(symbol, op)| (i, *symbol, *op))
    });
    let Some((at, symbol, op)) = found else {
        return Err(bad("invalid_filter", format!("filter '{text}' has no operator (= != < <= > >=)")));
    };
    let (path, raw) = (&text[..at], &text[at + symbol.len()..]);
    valid_path(path).map_err(|_| bad("invalid_filter", format!("filter '{text}': '{path}' is not a field path")))?;
    let value = if let Some(quoted) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        FilterValue::Text(quoted.to_owned())
    } else if let Ok(n) = raw.parse::<i64>() {
        FilterValue::Integer(n)
    } else if let Some(x) = raw.parse::<f64>().ok().filter(|x| x.is_finite()) {
        FilterValue::Real(x)
    } else if raw == "true" || raw == "false" {
        FilterValue::Bool(raw == "true")
    } else {
        FilterValue::Text(raw.to_owned())
    };
    Ok(Filter { path: path.to_owned(), op, value })
}

fn valid_path(path: &str) -> Result<(), AppError> {
    validate_field(path).map_err(|message| bad("invalid_field", message))
}

impl Cursor {
    /// The cursor as handed out: the hex of `k:<key>`, or of `v:` and the
    /// JSON `[type, value, key]` of an ordered listing's last document
    /// (type `n`, `i`, `r`, `t` from SQLite, `n`, `j` from PostgreSQL).
    pub(super) fn encode(&self) -> String {
        let text = match self {
            Cursor::AfterKey(key) => format!("k:{key}"),
            Cursor::After(value, key) => {
                let (kind, value) = match value {
                    SortValue::Null => ("n", serde_json::Value::Null),
                    SortValue::Integer(n) => ("i", (*n).into()),
                    // By its bits: a decimal text of a double does not always parse back to it.
                    SortValue::Real(x) => ("r", x.to_bits().into()),
                    SortValue::Text(t) => ("t", t.as_str().into()),
                    // PostgreSQL's JSONB text of the value, carried as a string.
                    SortValue::Json(j) => ("j", j.as_str().into()),
                };
                format!("v:{}", serde_json::json!([kind, value, key]))
            }
        };
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// A cursor [`Cursor::encode`] made, or `None` for any other text.
    fn decode(text: &str) -> Option<Cursor> {
        let digits = text.as_bytes();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        let digit = |d: u8| char::from(d).to_digit(16);
        let bytes =
            digits.chunks(2).map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)).collect::<Option<_>>()?;
        match String::from_utf8(bytes).ok()?.split_once(':')? {
            ("k", key) => Some(Cursor::AfterKey(key.to_owned())),
            ("v", json) => {
                let (kind, value, key): (String, serde_json::Value, String) = serde_json::from_str(json).ok()?;
                let value = match (kind.as_str(), value) {
                    ("n", serde_json::Value::Null) => SortValue::Null,
                    ("i", value) => SortValue::Integer(value.as_i64()?),
                    ("r", value) => SortValue::Real(f64::from_bits(value.as_u64()?)),
                    ("t", serde_json::Value::String(text)) => SortValue::Text(text),
                    ("j", serde_json::Value::String(json)) => SortValue::Json(json),
                    _ => return None,
                };
                Some(Cursor::After(value, key))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str) -> (String, Op, FilterValue) {
        let filter = parse_filter(text).expect("valid filter");
        (filter.path, filter.op, filter.value)
    }

    /// The error's code and message.
    fn refusal<T: std::fmt::Debug>(result: Result<T, AppError>) -> (&'static str, String) {
        let error = result.expect_err("refused");
        assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST, "{error:?}");
        (error.code(), error.message().to_owned())
    }

    #[test]
    fn each_operator_is_found_and_two_character_ones_win() {
        let cases = [
            ("age=30", Op::Eq),
            ("age!=30", Op::Ne),
            ("age<30", Op::Lt),
            ("age<=30", Op::Le),
            ("age>30", Op::Gt),
            ("age>=30", Op::Ge),
        ];
        for (text, op) in cases {
            assert_eq!(filter(text), ("age".to_owned(), op, FilterValue::Integer(30)), "{text}");
        }
        // The first operator splits: the rest belongs to the value.
        assert_eq!(filter("note=a=b"), ("note".to_owned(), Op::Eq, FilterValue::Text("a=b".into())));
        assert_eq!(filter("note>=<"), ("note".to_owned(), Op::Ge, FilterValue::Text("<".into())));
    }

    #[test]
    fn values_are_integers_then_reals_then_booleans_then_text_and_quotes_force_text() {
        let value = |text: &str| filter(text).2;
        assert_eq!(value("n=42"), FilterValue::Integer(42));
        assert_eq!(value("n=-7"), FilterValue::Integer(-7));
        assert_eq!(value("n=9223372036854775807"), FilterValue::Integer(i64::MAX));
        assert_eq!(value("n=9223372036854775808"), FilterValue::Real(9223372036854775808.0), "past i64");
        assert_eq!(value("n=2.5"), FilterValue::Real(2.5));
        assert_eq!(value("n=1e3"), FilterValue::Real(1000.0));
        assert_eq!(value("n=inf"), FilterValue::Text("inf".into()), "only finite numbers");
        assert_eq!(value("n=NaN"), FilterValue::Text("NaN".into()));
        assert_eq!(value("ok=true"), FilterValue::Bool(true));
        assert_eq!(value("ok=false"), FilterValue::Bool(false));
        assert_eq!(value("ok=True"), FilterValue::Text("True".into()));
        assert_eq!(value("city=Paris"), FilterValue::Text("Paris".into()));
        assert_eq!(value("name="), FilterValue::Text(String::new()));
        assert_eq!(value("name=\"42\""), FilterValue::Text("42".into()));
        assert_eq!(value("ok=\"true\""), FilterValue::Text("true".into()));
        assert_eq!(value("name=\"\""), FilterValue::Text(String::new()));
        assert_eq!(value("name=\"half"), FilterValue::Text("\"half".into()), "one quote is text");
    }

    #[test]
    fn dotted_paths_name_nested_fields() {
        assert_eq!(filter("address.city=Paris").0, "address.city");
        assert_eq!(filter("a.b-c.d_e<=1").0, "a.b-c.d_e");
    }

    #[test]
    fn a_filter_without_an_operator_or_with_a_bad_path_is_refused() {
        let (code, message) = refusal(parse_filter("quantity"));
        assert_eq!((code, message.as_str()), ("invalid_filter", "filter 'quantity' has no operator (= != < <= > >=)"));
        for text in ["=1", "a..b=1", ".a=1", "a.=1", "x'y=1", "a b=1", "a\"=1"] {
            assert_eq!(refusal(parse_filter(text)).0, "invalid_filter", "{text}");
        }
    }

    #[test]
    fn a_listing_without_parameters_is_the_first_page_of_100_in_key_order() {
        for raw in [None, Some("")] {
            let request = parse_list_request(raw).expect("valid");
            assert_eq!(request.query, Query::default());
            assert_eq!(request.query.limit, 100);
            assert_eq!((request.at_least, request.count), (None, false));
        }
    }

    #[test]
    fn every_parameter_lands_in_the_request() {
        let raw = "limit=5&at_least=77&order_by=-address.city&filter=age>=30&filter=name=%22x%22&count=true";
        let request = parse_list_request(Some(raw)).expect("valid");
        assert_eq!(request.query.limit, 5);
        assert_eq!(request.at_least, Some(77));
        assert!(request.count);
        assert_eq!(request.query.order, Some(Order { path: "address.city".into(), descending: true }));
        assert_eq!(
            request.query.filters,
            [
                Filter { path: "age".into(), op: Op::Ge, value: FilterValue::Integer(30) },
                Filter { path: "name".into(), op: Op::Eq, value: FilterValue::Text("x".into()) },
            ]
        );
        let request = parse_list_request(Some("order_by=quantity&count=false")).expect("valid");
        assert_eq!(request.query.order, Some(Order { path: "quantity".into(), descending: false }));
        assert!(!request.count);
    }

    #[test]
    fn the_limit_is_from_1_to_1000() {
        for limit in ["1", "1000"] {
            assert_eq!(page_limit(limit).expect("valid").to_string(), limit);
        }
        for limit in ["0", "1001", "-1", "ten", "", "1.5"] {
            let (code, message) = refusal(parse_list_request(Some(&format!("limit={limit}"))));
            assert_eq!(code, "invalid_limit", "{limit}");
            assert_eq!(message, format!("limit '{limit}' must be between 1 and 1000"));
        }
    }

    #[test]
    fn unknown_parameters_bad_positions_and_bad_orders_are_refused() {
        assert_eq!(
            refusal(parse_list_request(Some("limit=5&sort=quantity"))),
            ("unknown_parameter", "unknown query parameter 'sort'".to_owned())
        );
        assert_eq!(refusal(parse_list_request(Some("at_least=soon"))).0, "invalid_position");
        assert_eq!(refusal(parse_list_request(Some("at_least=-1"))).0, "invalid_position");
        for order in ["x'y", "-", "-a.", "a..b", ""] {
            assert_eq!(refusal(parse_list_request(Some(&format!("order_by={order}")))).0, "invalid_field", "{order}");
        }
    }

    #[test]
    fn cursors_round_trip() {
        for cursor in [
            Cursor::AfterKey("u1".into()),
            Cursor::AfterKey(String::new()),
            Cursor::AfterKey("a:b/ü %".into()),
            Cursor::After(SortValue::Null, "k".into()),
            Cursor::After(SortValue::Integer(i64::MIN), "k".into()),
            Cursor::After(SortValue::Real(-2.5), String::new()),
            Cursor::After(SortValue::Real(0.1 + 0.2), "k".into()),
            Cursor::After(SortValue::Real(206.20000000000002), "k".into()),
            Cursor::After(SortValue::Real(f64::MIN_POSITIVE), "k".into()),
            Cursor::After(SortValue::Text("Zoë \" ]".into()), "a:b".into()),
            Cursor::After(SortValue::Json(r#"{"a": [1, "x\"y"], "b": null}"#.into()), "k".into()),
            Cursor::After(SortValue::Json("0.30000000000000004".into()), "k".into()),
        ] {
            let text = cursor.encode();
            assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
            assert_eq!(Cursor::decode(&text), Some(cursor));
        }
        assert_eq!(Cursor::AfterKey("u1".into()).encode(), "6b3a7531");
    }

    #[test]
    fn only_cursors_this_api_could_have_made_decode() {
        let hex = |text: &[u8]| -> String { text.iter().map(|b| format!("{b:02x}")).collect() };
        let refused = [
            "6b3a753".to_owned(),           // odd length
            "zz".to_owned(),                // not hex
            "+b3a7531".to_owned(),          // a sign is not a digit
            "6b3a75é".to_owned(),           // not ASCII
            hex(b"k:\xff\xfe"),             // not UTF-8
            hex(b"u1"),                     // no kind
            hex(b"x:u1"),                   // an unknown kind
            hex(b"o:18446744073709551615"), // the offset cursors of earlier releases
            hex(b"v:[\"i\",1.5,\"k\"]"),    // an integer that is not one
            hex(b"v:[\"i\",18446744073709551615,\"k\"]"),
            hex(b"v:[\"t\",1,\"k\"]"),
            hex(b"v:[\"j\",1,\"k\"]"), // JSON text travels as a string
            hex(b"v:[\"n\",null]"),
            hex(b"v:[\"x\",1,\"k\"]"),
            String::new(),
        ];
        for text in refused {
            assert_eq!(Cursor::decode(&text), None, "{text}");
        }
        assert_eq!(Cursor::decode("6B3A7531"), Some(Cursor::AfterKey("u1".into())), "either case of hex digits");
    }

    #[test]
    fn a_cursor_continues_only_the_kind_of_listing_it_came_from() {
        let key = Cursor::AfterKey("u2".into()).encode();
        let after = Cursor::After(SortValue::Integer(40), "u9".into());
        let offset = after.encode();
        let page = Page::After { value: SortValue::Integer(40), key: "u9".into() };
        let request = parse_list_request(Some(&format!("cursor={key}"))).expect("a key cursor in key order");
        assert_eq!(request.query.page, Page::AfterKey(Some("u2".into())));
        let request =
            parse_list_request(Some(&format!("order_by=-n&cursor={offset}"))).expect("a value cursor when ordered");
        assert_eq!(request.query.page, page);
        // The order may come after the cursor in the query string.
        let request = parse_list_request(Some(&format!("cursor={offset}&order_by=n"))).expect("valid");
        assert_eq!(request.query.page, page);

        for raw in [format!("order_by=n&cursor={key}"), format!("cursor={offset}"), "cursor=zz".to_owned()] {
            let (code, message) = refusal(parse_list_request(Some(&raw)));
            assert_eq!(code, "invalid_cursor", "{raw}");
            assert!(message.ends_with("was not issued by this API for this listing"), "{message}");
        }
    }

    #[test]
    fn a_listing_takes_a_bounded_number_of_bounded_filters() {
        let many = |n: usize| (0..n).map(|i| format!("filter=n{i}={i}")).collect::<Vec<_>>().join("&");
        assert_eq!(parse_list_request(Some(&many(MAX_FILTERS))).expect("at the cap").query.filters.len(), MAX_FILTERS);
        assert_eq!(
            refusal(parse_list_request(Some(&many(MAX_FILTERS + 1)))),
            ("too_many_filters", format!("a listing takes at most {MAX_FILTERS} filters"))
        );
        let long = format!("filter=name={}", "x".repeat(MAX_FILTER_BYTES - 5));
        assert!(parse_list_request(Some(&long)).is_ok(), "exactly the longest filter");
        let longer = format!("filter=name={}", "x".repeat(MAX_FILTER_BYTES - 4));
        let (code, message) = refusal(parse_list_request(Some(&longer)));
        assert_eq!(code, "invalid_filter");
        assert_eq!(
            message,
            format!("a filter is at most {MAX_FILTER_BYTES} bytes; this one is {}", MAX_FILTER_BYTES + 1)
        );
    }
}
