//! The bench's own command line, printed with its figures so that a run can be
//! repeated exactly, with a token's or client secret's value left out.

/// Flags whose value is a secret, and what is printed instead.
const SECRET_FLAGS: [(&str, &str); 2] = [
    ("--token", "\"$TOKEN\""),
    ("--client-secret", "\"$CLIENT_SECRET\""),
];

/// This process's command line, quoted for a POSIX shell, secrets left out.
pub fn current() -> String {
    quote(std::env::args())
}

/// `args` quoted for a POSIX shell, the values of [`SECRET_FLAGS`] replaced.
fn quote(args: impl IntoIterator<Item = String>) -> String {
    let mut out = Vec::new();
    let mut hide_next = None;
    for arg in args {
        if let Some(placeholder) = hide_next.take() {
            out.push(placeholder);
            continue;
        }
        if let Some((flag, placeholder)) = SECRET_FLAGS.iter().find(|(flag, _)| arg == *flag) {
            hide_next = Some((*placeholder).to_owned());
            out.push((*flag).to_owned());
            continue;
        }
        if let Some((flag, placeholder)) = SECRET_FLAGS
            .iter()
            .find(|(flag, _)| arg.starts_with(&format!("{flag}=")))
        {
            out.push(format!("{flag}={placeholder}"));
            continue;
        }
        out.push(shell_quote(&arg));
    }
    out.join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_a_shell_needs_quoted() {
        assert_eq!(shell_quote("--requests"), "--requests");
        assert_eq!(
            shell_quote("target/release/kinde-meter"),
            "target/release/kinde-meter"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn leaves_out_tokens_and_client_secrets() {
        let args = [
            "kinde-meter",
            "bench",
            "--token",
            "eyJ.secret",
            "--client-secret=s3cr3t",
            "--client-secret",
            "other secret",
            "--connections",
            "8,64",
        ]
        .map(str::to_owned);
        assert_eq!(
            quote(args),
            "kinde-meter bench --token \"$TOKEN\" --client-secret=\"$CLIENT_SECRET\" \
             --client-secret \"$CLIENT_SECRET\" --connections 8,64"
        );
    }
}
