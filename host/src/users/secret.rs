//! The registration secret and what is keyed with it (HMAC-SHA256): the
//! user id an `Idempotency-Key` stands for, and the digest of a request that
//! a retry is compared with (docs/adr/0010-registration-cost-and-idempotency.md).
//!
//! It does not store the secret: the host keeps it in `DATA/registration-secret`
//! (owner-only), generated at the first start.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::command::RegisterUser;

/// A 256-bit server secret. Its `Debug` output hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationSecret([u8; 32]);

impl std::fmt::Debug for RegistrationSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistrationSecret(<hidden>)")
    }
}

impl RegistrationSecret {
    /// A fresh secret from the operating system's random source.
    pub fn generate() -> RegistrationSecret {
        use password_hash::rand_core::{OsRng, RngCore};
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        RegistrationSecret(bytes)
    }

    /// The secret as stored: 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Reads the stored form (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> anyhow::Result<RegistrationSecret> {
        let text = text.trim();
        anyhow::ensure!(
            text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()),
            "the registration secret must be 64 hex digits"
        );
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            // Two ASCII hex digits: both conversions succeed.
            let pair = std::str::from_utf8(pair).unwrap_or("00");
            *byte = u8::from_str_radix(pair, 16).unwrap_or(0);
        }
        Ok(RegistrationSecret(bytes))
    }

    /// The user id a registration under `key` for the (normalised) email
    /// `email_key` gets. Without the secret nobody can compute it, and
    /// another email under the same key gets another id, so knowing a
    /// victim's key is not enough to register under the id they will get.
    pub(crate) fn user_id(&self, key: &str, email_key: &str) -> uuid::Uuid {
        let mac = self.mac("projector/registration/user-id/v1", &[key.as_bytes(), email_key.as_bytes()]);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&mac[..16]);
        // Random-looking to whoever lacks the secret: marked as version 4.
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// The digest of the whole request (email as given, username,
    /// password): a retry is the same request exactly when its digest is
    /// equal, whatever part differs, so the answer to a mismatch cannot say
    /// which part (the password, say) was wrong.
    pub(crate) fn digest(&self, command: &RegisterUser) -> String {
        let parts = [command.email.as_bytes(), command.username.as_bytes(), command.password.expose().as_bytes()];
        hex(&self.mac("projector/registration/request/v1", &parts))
    }

    /// HMAC-SHA256 over `purpose` and `parts`, each length-prefixed so that
    /// no two different lists of parts give the same input.
    fn mac(&self, purpose: &str, parts: &[&[u8]]) -> [u8; 32] {
        // HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else { unreachable!("HMAC takes any key") };
        for part in std::iter::once(purpose.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// Compares two digests in time independent of where they differ.
pub(crate) fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command(email: &str, username: &str, password: &str) -> RegisterUser {
        let body = json!({"email": email, "username": username, "password": password});
        RegisterUser::from_json(body.as_object().expect("object").clone()).expect("valid")
    }

    #[test]
    fn the_stored_form_reads_back_and_debug_hides_it() {
        let secret = RegistrationSecret::generate();
        assert_eq!(RegistrationSecret::from_hex(&format!("{}\n", secret.to_hex())).expect("hex"), secret);
        assert!(RegistrationSecret::from_hex("abc").is_err());
        assert!(RegistrationSecret::from_hex(&"g".repeat(64)).is_err());
        assert!(!format!("{secret:?}").contains(&secret.to_hex()[..8]));
        assert_ne!(RegistrationSecret::generate(), secret);
    }

    #[test]
    fn ids_depend_on_the_secret_the_key_and_the_email() {
        let (one, two) = (RegistrationSecret::generate(), RegistrationSecret::generate());
        let id = one.user_id("signup-1", "ada@example.com");
        assert_eq!(id, one.user_id("signup-1", "ada@example.com"), "a retry finds the same id");
        assert_eq!(id.get_version_num(), 4);
        assert_ne!(id, one.user_id("signup-1", "eve@example.com"));
        assert_ne!(id, one.user_id("signup-2", "ada@example.com"));
        assert_ne!(id, two.user_id("signup-1", "ada@example.com"));
        assert_ne!(one.user_id("ab", "c@d.ef"), one.user_id("a", "bc@d.ef"), "parts are delimited");
    }

    #[test]
    fn the_digest_changes_with_every_part_of_the_request() {
        let secret = RegistrationSecret::generate();
        let digest = secret.digest(&command("Ada@example.com", "ada", "correct horse"));
        assert_eq!(digest, secret.digest(&command(" Ada@example.com ", "ada", "correct horse")), "trimmed");
        for other in [
            command("ada@example.com", "ada", "correct horse"),
            command("Ada@example.com", "Ada", "correct horse"),
            command("Ada@example.com", "ada", "correct horsf"),
        ] {
            assert!(!same_digest(&digest, &secret.digest(&other)), "{other:?}");
        }
        assert!(same_digest(&digest, &digest.clone()));
        assert!(!digest.contains("horse"));
    }
}
