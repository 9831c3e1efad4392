//! Scopes (RFC 6749 §3.3) and their Matrix reading (MSC2967): `domain::scope`.
#![no_main]

use domain::scope::{
    asks_for_admin, describe_scopes, device_id, granted_device, is_valid_device_id, other_form,
    MatrixForm, Scope, ScopeError, API_SCOPE, UNSTABLE_API_SCOPE,
};
use libfuzzer_sys::fuzz_target;

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_char(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E')
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let _ = describe_scopes(raw);
    let _ = asks_for_admin(raw);
    let tokens: Vec<&str> = raw.split(' ').filter(|t| !t.is_empty()).collect();
    let scope = match Scope::parse(raw) {
        Ok(scope) => scope,
        Err(ScopeError::Empty) => {
            assert!(tokens.is_empty(), "{raw:?}");
            return;
        }
        Err(ScopeError::InvalidToken(bad)) => {
            // Refused only for a token outside the RFC 6749 §3.3 alphabet.
            assert!(tokens.contains(&bad.as_str()));
            assert!(!bad.chars().all(is_scope_char));
            return;
        }
    };
    // Accepted: every token is in the alphabet, and the canonical form reads back the same.
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(|t| t.chars().all(is_scope_char)));
    assert!(tokens.iter().all(|t| scope.contains(t)));
    assert_eq!(scope.iter().count(), {
        let mut unique = tokens.clone();
        unique.sort_unstable();
        unique.dedup();
        unique.len()
    });
    let canonical = scope.to_string();
    assert!(!canonical.starts_with(' ') && !canonical.ends_with(' ') && !canonical.contains("  "));
    assert_eq!(Scope::parse(&canonical).as_ref(), Ok(&scope));

    let Ok(grant) = scope.matrix() else {
        assert_eq!(granted_device(&canonical), None);
        return;
    };
    // MSC2967: a device scope needs the API scope, its ID is valid, the spelling is one form.
    if let Some(id) = &grant.device_id {
        assert!(grant.api);
        assert!(is_valid_device_id(id));
        assert_eq!(
            scope.iter().filter(|t| device_id(t).is_some()).count(),
            1,
            "{raw:?}"
        );
    }
    assert_eq!(granted_device(&canonical), grant.device_id);
    assert_eq!(
        grant.api,
        scope.contains(API_SCOPE) || scope.contains(UNSTABLE_API_SCOPE)
    );
    if grant.api || grant.device_id.is_some() {
        assert!(grant.form.is_some());
    }
    for token in scope.iter() {
        if let Some(other) = other_form(token) {
            assert_eq!(other_form(&other).as_deref(), Some(token));
            let unstable = token.starts_with("urn:matrix:org.matrix.msc2967.");
            match grant.form {
                Some(MatrixForm::Stable) => assert!(!unstable, "{raw:?}"),
                Some(MatrixForm::Unstable) => assert!(unstable, "{raw:?}"),
                None => panic!("an MSC2967 token without a form: {raw:?}"),
            }
        }
    }
    // The same request in the other spelling grants the same.
    let swapped: Vec<String> = scope
        .iter()
        .map(|t| other_form(t).unwrap_or_else(|| t.to_owned()))
        .collect();
    let swapped = Scope::parse(&swapped.join(" ")).expect("the other form is a scope");
    let other = swapped.matrix().expect("the other form is accepted too");
    assert_eq!(
        (other.api, &other.device_id, other.admin),
        (grant.api, &grant.device_id, grant.admin)
    );
});
