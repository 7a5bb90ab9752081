//! Tokens from a local time-stamping authority (`openssl ts -reply`, OpenSSL is on every
//! machine this project builds on): a good token verifies, and a token for other bytes, one
//! signed with an expired certificate, one checked against a foreign authority's certificate,
//! one from a certificate not marked for time stamping, and an altered one are refused.

use std::path::{Path, PathBuf};

use nnmark_tsp::local_authority::{KeyKind, LocalAuthority};
use nnmark_tsp::{load_certificates, request, token_from_response, verify_token};

fn authority(dir: &Path, name: &str, key: KeyKind, days: i32) -> LocalAuthority {
    LocalAuthority::new(dir, name, key, days).expect("the openssl command runs the local authority")
}

fn certs(path: PathBuf) -> Vec<nnmark_tsp::Certificate> {
    load_certificates(&std::fs::read(path).unwrap()).unwrap()
}

fn err<T: std::fmt::Debug>(r: nnmark_tsp::Result<T>) -> String {
    r.expect_err("must be refused").to_string()
}

#[test]
fn tokens_from_a_local_authority_verify_and_forgeries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let digest = [0x5au8; 32];
    let req = request(&digest).unwrap();
    for (key, kind) in [("rsa", KeyKind::Rsa), ("ec", KeyKind::EcP256)] {
        let good = authority(tmp.path(), &format!("good-{key}"), kind, 10);
        let token = token_from_response(&good.reply(&req).unwrap()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Trusting the CA, or the authority's own certificate, both work.
        for trusted in [certs(good.ca_cert()), certs(good.tsa_cert())] {
            let v = verify_token(&token, &digest, &trusted).unwrap();
            assert!(v.unix_seconds.abs_diff(now) < 600, "{v:?}");
            assert!(v.tsa.contains(&format!("good-{key} TSA")), "{v:?}");
            assert_eq!(v.policy, "1.2.3.4.1");
        }
        let ca = certs(good.ca_cert());

        // A token for other bytes.
        let mut other = digest;
        other[0] ^= 1;
        let e = err(verify_token(&token, &other, &ca));
        assert!(e.contains("a token for other bytes"), "{e}");

        // A foreign authority's certificate as the trust anchor.
        let foreign = authority(tmp.path(), &format!("foreign-{key}"), kind, 10);
        let e = err(verify_token(&token, &digest, &certs(foreign.ca_cert())));
        assert!(e.contains("does not chain to a trusted certificate"), "{e}");

        // An authority whose certificate had expired when it signed.
        let expired = authority(tmp.path(), &format!("expired-{key}"), kind, -1);
        let token_x = token_from_response(&expired.reply(&req).unwrap()).unwrap();
        let e = err(verify_token(&token_x, &digest, &certs(expired.ca_cert())));
        assert!(e.contains("expired or not yet valid"), "{e}");

        // One byte of the signed time changed: the signed digest no longer matches.
        let pos = token
            .windows(3)
            .position(|w| w == b"202")
            .expect("the generalized time is in the token");
        let mut altered = token.clone();
        altered[pos + 3] ^= 1;
        let e = err(verify_token(&altered, &digest, &ca));
        assert!(
            e.contains("was altered") || e.contains("TSTInfo") || e.contains("does not verify"),
            "{e}"
        );
    }
}

#[test]
fn garbage_is_a_clear_error() {
    let e = err(token_from_response(b"not der"));
    assert!(e.contains("time-stamp response"), "{e}");
    let e = err(verify_token(b"\x30\x03\x02\x01\x00", &[0; 32], &[]));
    assert!(e.contains("time-stamp token"), "{e}");
    let e = err(load_certificates(
        b"-----BEGIN NOTHING-----\n-----END NOTHING-----\n",
    ));
    assert!(e.contains("certificate"), "{e}");
}
