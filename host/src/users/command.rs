//! The registration command, read from the request's JSON object and
//! validated with every problem reported at once, field by field.
//!
//! It decides nothing about other users (uniqueness is the store's job, see
//! `uniqueness`); it only says whether this one request is well formed.

use std::collections::BTreeMap;
use std::fmt;

use projector_events::UniqueValue;
use serde_json::{Map, Value};

/// Problems by field name, e.g. `"email" -> "is not a valid email address"`.
pub type FieldErrors = BTreeMap<String, String>;

/// The longest email accepted (the SMTP path limit).
pub const EMAIL_MAX: usize = 254;
/// Allowed username lengths, in characters.
pub const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=50;
/// Allowed password lengths, in characters (Unicode scalar values).
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;

/// A valid request to register a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterUser {
    /// The email as given, without surrounding whitespace.
    pub email: String,
    /// The username as given.
    pub username: String,
    /// The password, which never leaves this process except as a hash.
    pub password: Password,
}

/// A plain password. Its `Debug` output hides it, so it cannot reach a log
/// by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password's text, for hashing and verifying only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

impl RegisterUser {
    /// Reads `{ "email", "username", "password" }`; unknown fields, missing
    /// fields, wrong types and invalid values are all reported together.
    pub fn from_json(mut body: Map<String, Value>) -> Result<RegisterUser, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut field = |name: &str, check: fn(&str) -> Result<(), String>| -> Option<String> {
            let problem = match body.remove(name) {
                None | Some(Value::Null) => "is required".to_owned(),
                Some(Value::String(text)) => match check(&text) {
                    Ok(()) => return Some(text),
                    Err(problem) => problem,
                },
                Some(_) => "must be a string".to_owned(),
            };
            errors.insert(name.to_owned(), problem);
            None
        };
        let email = field("email", |e| check_email(e.trim()));
        let username = field("username", check_username);
        let password = field("password", check_password);
        for unknown in body.keys() {
            errors.insert(unknown.clone(), "is not a known field (expected email, username, password)".to_owned());
        }
        match (email, username, password) {
            (Some(email), Some(username), Some(password)) if errors.is_empty() => {
                Ok(RegisterUser { email: email.trim().to_owned(), username, password: Password(password) })
            }
            _ => Err(errors),
        }
    }

    /// The email as compared for uniqueness: lower-cased.
    pub fn email_key(&self) -> String {
        UniqueValue::Email.normalise(&self.email)
    }

    /// The username as compared for uniqueness: lower-cased.
    pub fn username_key(&self) -> String {
        UniqueValue::Username.normalise(&self.username)
    }
}

/// `local@domain`: a dot-atom local part of at most 64 characters and a
/// domain name of at least two labels (letters, digits, inner hyphens) with
/// a top-level label that is not all digits. Quoted local parts, IP-literal
/// domains and non-ASCII addresses are refused (an internationalised domain
/// is accepted in its `xn--` form).
fn check_email(email: &str) -> Result<(), String> {
    if email.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if email.len() > EMAIL_MAX {
        return Err(format!("must be at most {EMAIL_MAX} characters"));
    }
    let invalid = || Err("is not a valid email address".to_owned());
    let Some((local, domain)) = email.rsplit_once('@') else { return invalid() };
    const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty() && atom.chars().all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && labels.last().is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()));
    if local_ok && domain_ok {
        Ok(())
    } else {
        invalid()
    }
}

/// 3 to 50 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
fn check_username(username: &str) -> Result<(), String> {
    let length = username.chars().count();
    if !USERNAME_CHARS.contains(&length) {
        return Err(format!(
            "must be {} to {} characters (it has {length})",
            USERNAME_CHARS.start(),
            USERNAME_CHARS.end()
        ));
    }
    let allowed = username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !allowed || !username.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(
            "may contain only letters a-z and A-Z, digits, '.', '_' and '-', and must start with a letter or digit"
                .to_owned(),
        );
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    if PASSWORD_CHARS.contains(&length) {
        Ok(())
    } else {
        Err(format!("must be {} to {} characters (it has {length})", PASSWORD_CHARS.start(), PASSWORD_CHARS.end()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<RegisterUser, FieldErrors> {
        RegisterUser::from_json(body.as_object().expect("object").clone())
    }

    #[test]
    fn a_valid_request_keeps_the_email_as_given_but_trimmed() {
        let user = parse(
            json!({"email": "  Ada.Lovelace+x@Example.co.uk ", "username": "Ada_1815", "password": "correct horse"}),
        )
        .expect("valid");
        assert_eq!(user.email, "Ada.Lovelace+x@Example.co.uk");
        assert_eq!(user.email_key(), "ada.lovelace+x@example.co.uk");
        assert_eq!(user.username_key(), "ada_1815");
        assert_eq!(user.password.expose(), "correct horse");
        assert!(!format!("{user:?}").contains("horse"), "Debug must hide the password");
    }

    #[test]
    fn emails() {
        for good in ["a@b.co", "x.y-z+tag@sub.example.org", "o'neil@example.ie", "user@xn--bcher-kva.example"] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a@@b.com",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a b@example.com",
            "a@-example.com",
            "a@example-.com",
            "a@example..com",
            "a@1.2.3.4",
            "ü@example.com",
            "a@exämple.com",
            &long,
        ] {
            assert!(check_email(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn usernames() {
        for good in ["ada", "a.b_c-d", "0xdeadbeef", &"x".repeat(50)] {
            assert_eq!(check_username(good), Ok(()), "{good}");
        }
        for bad in ["ab", &"x".repeat(51), "_ada", ".ada", "ada lovelace", "ada!", "adá", ""] {
            assert!(check_username(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn passwords_count_characters_not_bytes() {
        assert!(check_password("1234567").is_err());
        assert_eq!(check_password("12345678"), Ok(()));
        assert_eq!(check_password(&"é".repeat(128)), Ok(()), "128 characters, 256 bytes");
        assert!(check_password(&"x".repeat(129)).is_err());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = parse(json!({"email": 42, "username": "x", "extra": true})).expect_err("invalid");
        assert_eq!(errors.keys().map(String::as_str).collect::<Vec<_>>(), ["email", "extra", "password", "username"]);
        assert_eq!(errors["email"], "must be a string");
        assert_eq!(errors["password"], "is required");
        assert!(errors["extra"].starts_with("is not a known field"));
    }
}
