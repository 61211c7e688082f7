//! The search filter of a login: a template with `%s` (the full login), `%u` (its local part)
//! and `%d` (its domain), each value escaped as RFC 4515 says so that a login can never add
//! a clause of its own (`*)(uid=*` stays one literal value).

/// Escapes the characters that have a meaning inside an LDAP filter value (RFC 4515 §3):
/// `*`, `(`, `)`, `\` and NUL, as `\XX`.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Fills `template` for `login`: `%s` → the whole login, `%u` → the part before the last `@`
/// (the whole login when it has none), `%d` → the part after it (empty when none), `%%` → `%`.
pub fn expand(template: &str, login: &str) -> String {
    let (local, domain) = login.rsplit_once('@').unwrap_or((login, ""));
    let mut out = String::with_capacity(template.len() + 3 * login.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push_str(&escape(login)),
            Some('u') => out.push_str(&escape(local)),
            Some('d') => out.push_str(&escape(domain)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_and_escapes() {
        let template = "(|(mail=%s)(uid=%u))";
        for (login, want) in [
            ("carol@corp.test", "(|(mail=carol@corp.test)(uid=carol))"),
            ("carol", "(|(mail=carol)(uid=carol))"),
            (
                "*)(uid=*",
                "(|(mail=\\2a\\29\\28uid=\\2a)(uid=\\2a\\29\\28uid=\\2a))",
            ),
            (
                "a\\b\0@x(y)",
                "(|(mail=a\\5cb\\00@x\\28y\\29)(uid=a\\5cb\\00))",
            ),
        ] {
            assert_eq!(expand(template, login), want, "{login}");
        }
        assert_eq!(
            expand("(&(mail=%u@%d)(o=100%%))", "x@y"),
            "(&(mail=x@y)(o=100%))"
        );
        assert_eq!(expand("(cn=%x%", "x"), "(cn=%x%");
    }

    /// Every expansion of a hostile login still parses as a filter with exactly the clauses of
    /// the template.
    #[test]
    fn injected_filters_stay_one_value() {
        for login in [
            "*",
            "*)(uid=*",
            ")(|(objectClass=*",
            "\\",
            "a)(b",
            "x@y)(mail=*",
        ] {
            let filter = expand("(mail=%s)", login);
            assert!(ldap3::parse_filter(&filter).is_ok(), "{filter}");
            assert_eq!(filter.matches('(').count(), 1, "{filter}");
        }
    }
}
