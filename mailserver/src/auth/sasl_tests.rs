//! The SASL engine against RFC vectors and broken input.

use super::*;

fn verify(login: &str, password: &str) -> Step {
    Step::Verify {
        login: login.into(),
        password: password.into(),
    }
}

#[test]
fn plain() {
    let cases: &[(&[u8], Step)] = &[
        (
            b"\0alice@example.test\0s3cret",
            verify("alice@example.test", "s3cret"),
        ),
        (b"alice\0alice\0pass word", verify("alice", "pass word")),
        (b"ALICE\0alice\0pw", verify("alice", "pw")),
        (b"\0alice\0", verify("alice", "")),
        // Acting as another user: refused like a wrong password.
        (
            b"bob\0alice\0pw",
            Step::Rejected {
                login: "alice".into(),
            },
        ),
        (b"\0\0pw", Step::Malformed(Malformed::Syntax)),
        (b"alice\0pw", Step::Malformed(Malformed::Syntax)),
        (b"\0a\0b\0c", Step::Malformed(Malformed::Syntax)),
        (b"", Step::Malformed(Malformed::Syntax)),
        (b"\0\xff\0pw", Step::Malformed(Malformed::Syntax)),
    ];
    for (input, want) in cases {
        // As an initial response and after the empty challenge: the same outcome.
        let mut ex = Exchange::new(Mechanism::Plain).unwrap();
        assert_eq!(&ex.start(Some(input.to_vec())), want, "{input:?}");
        let mut ex = Exchange::new(Mechanism::Plain).unwrap();
        assert_eq!(ex.start(None), Step::Challenge(Vec::new()));
        assert_eq!(&ex.respond(input), want, "{input:?}");
        // Nothing more after the end.
        assert_eq!(ex.respond(b"x"), Step::Malformed(Malformed::Syntax));
    }
}

#[test]
fn login() {
    let mut ex = Exchange::new(Mechanism::Login).unwrap();
    assert_eq!(ex.start(None), Step::Challenge(b"Username:".to_vec()));
    assert_eq!(ex.respond(b"alice"), Step::Challenge(b"Password:".to_vec()));
    assert_eq!(ex.respond(b"pw d"), verify("alice", "pw d"));
    // The user name as the initial response (`AUTH LOGIN YWxpY2U=`).
    let mut ex = Exchange::new(Mechanism::Login).unwrap();
    assert_eq!(
        ex.start(Some(b"alice".to_vec())),
        Step::Challenge(b"Password:".to_vec())
    );
    assert_eq!(ex.respond(b""), verify("alice", ""));
    let mut ex = Exchange::new(Mechanism::Login).unwrap();
    ex.start(None);
    assert_eq!(ex.respond(b""), Step::Malformed(Malformed::Syntax));
    let mut ex = Exchange::new(Mechanism::Login).unwrap();
    ex.start(None);
    assert_eq!(ex.respond(b"a\0b"), Step::Malformed(Malformed::Syntax));
}

#[test]
fn lines() {
    for (line, initial, want) in [
        (&b"*\r\n"[..], false, Ok(Response::Cancel)),
        (b"*", true, Ok(Response::Cancel)),
        (b"=", true, Ok(Response::Data(Vec::new()))),
        (b"=", false, Err(Malformed::Base64)),
        (b"", false, Ok(Response::Data(Vec::new()))),
        (b"YWxpY2U=\r", false, Ok(Response::Data(b"alice".to_vec()))),
        (b"!!!", false, Err(Malformed::Base64)),
        (b"YWxpY2U", false, Err(Malformed::Base64)),
    ] {
        assert_eq!(decode_line(line, initial), want, "{line:?}");
    }
    let huge = vec![b'A'; MAX_RESPONSE * 2];
    assert_eq!(decode_line(&huge, false), Err(Malformed::TooLong));
    let mut ex = Exchange::new(Mechanism::Plain).unwrap();
    ex.start(None);
    assert_eq!(
        ex.respond(&vec![0; MAX_RESPONSE + 1]),
        Step::Malformed(Malformed::TooLong)
    );
}

#[test]
fn mechanisms() {
    assert_eq!(
        Mechanism::parse("scram-sha-256"),
        Some(Mechanism::ScramSha256)
    );
    assert_eq!(Mechanism::parse("CRAM-MD5"), None);
    // Known but not offered yet: no exchange.
    assert!(Exchange::new(Mechanism::XOAuth2).is_none());
    assert!(Exchange::new(Mechanism::OAuthBearer).is_none());
    let names: Vec<_> = Mechanism::OFFERED.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["PLAIN", "LOGIN", "SCRAM-SHA-256"]);
}

/// RFC 7677 section 3: user `user`, password `pencil`.
#[test]
fn scram_sha_256_rfc7677_vector() {
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let keys = ScramKeys::derive("pencil", &salt, 4096);
    assert_eq!(
        ScramKeys::from_stored(&keys.to_stored()),
        Some(keys.clone())
    );
    let mut ex =
        Exchange::with_nonce(Mechanism::ScramSha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").unwrap();
    assert_eq!(
        ex.start(Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec())),
        Step::NeedKeys {
            login: "user".into()
        }
    );
    assert_eq!(
        ex.keys(keys),
        Step::Challenge(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                .to_vec()
        )
    );
    assert_eq!(
        ex.respond(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        ),
        Step::Proven {
            login: "user".into(),
            server_final: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        }
    );
    assert_eq!(ex.respond(b""), Step::Accepted);
}

fn scram_to_final(client_first: &[u8], keys: ScramKeys) -> Exchange {
    let mut ex =
        Exchange::with_nonce(Mechanism::ScramSha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").unwrap();
    assert_eq!(ex.start(None), Step::Challenge(Vec::new()));
    assert!(matches!(ex.respond(client_first), Step::NeedKeys { .. }));
    assert!(matches!(ex.keys(keys), Step::Challenge(_)));
    ex
}

#[test]
fn scram_wrong_proof_nonce_or_binding_is_rejected() {
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    let rejected = Step::Rejected {
        login: "user".into(),
    };
    // The vector's proof against keys for another password.
    let mut ex = scram_to_final(first, ScramKeys::derive("pencil2", &salt, 4096));
    assert_eq!(
        ex.respond(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        ),
        rejected
    );
    let right = ScramKeys::derive("pencil", &salt, 4096);
    for final_message in [
        // Another nonce.
        &b"c=biws,r=rOprNGfwEbeRWgbNEkqOxx,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="[..],
        // Channel binding echo that is not the gs2 header.
        b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        // A short proof.
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
    ] {
        let mut ex = scram_to_final(first, right.clone());
        assert_eq!(ex.respond(final_message), rejected, "{final_message:?}");
    }
    // Fake keys for an unknown user look like real ones and never match.
    let fake = ScramKeys::fake("user", b"secret");
    assert_eq!(fake.salt, ScramKeys::fake("USER", b"secret").salt);
    assert_ne!(fake.salt, ScramKeys::fake("other", b"secret").salt);
    let mut ex = scram_to_final(first, fake);
    assert_eq!(
        ex.respond(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        ),
        rejected
    );
}

#[test]
fn scram_malformed() {
    let malformed = Step::Malformed(Malformed::Syntax);
    for first in [
        &b""[..],
        b"n,,",
        b"n,,n=user",
        b"n,,r=abc,n=user",
        b"x,,n=user,r=abc",
        b"n,,n=,r=abc",
        b"n,,n=us=er,r=abc",
        b"n,,n=user,r=",
        b"n,,n=user,r=a b",
        b"n,b=x,n=user,r=abc",
        b"n,,n=user\xff,r=abc",
    ] {
        let mut ex = Exchange::new(Mechanism::ScramSha256).unwrap();
        let step = if first.is_empty() {
            ex.start(None);
            ex.respond(first)
        } else {
            ex.start(Some(first.to_vec()))
        };
        assert_eq!(step, malformed, "{:?}", String::from_utf8_lossy(first));
    }
    let mut ex = Exchange::new(Mechanism::ScramSha256).unwrap();
    assert_eq!(
        ex.start(Some(b"p=tls-unique,,n=user,r=abc".to_vec())),
        Step::Malformed(Malformed::ChannelBinding)
    );
    // `y` is accepted (we offer no -PLUS); escaped names are unescaped.
    let mut ex = Exchange::new(Mechanism::ScramSha256).unwrap();
    assert_eq!(
        ex.start(Some(b"y,,n=a=2Cb=3Dc,r=abc".to_vec())),
        Step::NeedKeys {
            login: "a,b=c".into()
        }
    );
    // An authzid of another user is a refusal.
    let mut ex = Exchange::new(Mechanism::ScramSha256).unwrap();
    assert_eq!(
        ex.start(Some(b"n,a=bob,n=alice,r=abc".to_vec())),
        Step::Rejected {
            login: "alice".into()
        }
    );
    // The final message without a proof.
    let salt = b"salt";
    let mut ex = scram_to_final(b"n,,n=user,r=abc", ScramKeys::derive("x", salt, 16));
    assert_eq!(ex.respond(b"c=biws,r=abc"), malformed);
    // Keys given when none were asked for.
    let mut ex = Exchange::new(Mechanism::Plain).unwrap();
    assert_eq!(ex.keys(ScramKeys::derive("x", salt, 16)), malformed);
}

#[test]
fn stored_keys_are_bounded() {
    let keys = ScramKeys::derive("x", b"salt", 16);
    let text = keys.to_stored();
    assert_eq!(ScramKeys::from_stored(&text), Some(keys));
    for bad in [
        "",
        "0,c2FsdA==,AAAA,AAAA",
        "abc",
        &text.replacen("16,", "2000000,", 1),
        &format!("{text},extra"),
    ] {
        assert_eq!(ScramKeys::from_stored(bad), None, "{bad}");
    }
}
