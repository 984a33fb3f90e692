//! Host name patterns, shared by alert rules and fleet tokens: `*` any
//! run of characters, `?` one; everything else itself.

/// The longest pattern accepted.
pub const MAX_PATTERN_BYTES: usize = 256;

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    if pattern.is_ascii() && name.is_ascii() {
        // The common case, with no allocation (alert rules match every
        // host every tick).
        return glob_matches(pattern.as_bytes(), name.as_bytes(), b'*', b'?');
    }
    // By character, so `?` is one character of any script.
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    glob_matches(&pattern, &name, '*', '?')
}

/// A pattern people can write: 1 to 256 printable characters.
pub fn check(pattern: &str) -> Result<(), String> {
    if pattern.is_empty()
        || pattern.len() > MAX_PATTERN_BYTES
        || pattern.chars().any(char::is_control)
    {
        return Err(format!(
            "a host pattern is 1 to {MAX_PATTERN_BYTES} printable characters (`*` any run, `?` one)"
        ));
    }
    Ok(())
}

/// Linear in the text with backtracking to the last `*` only: no
/// pattern makes it slow.
fn glob_matches<T: Copy + PartialEq>(pattern: &[T], text: &[T], many: T, one: T) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(&c) if c == many => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == one || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == many)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        assert!(matches("web-*", "web-12") && !matches("web-*", "db-1"));
        assert!(matches("*", "") && matches("a*b*c", "aXXbYYc") && !matches("a*b*c", "aXXbYY"));
        assert!(matches("h?st", "höst"), "? is one character, not one byte");
        assert!(!matches("h?st", "hst"));
        assert!(check("").is_err() && check("a\nb").is_err() && check("web-*").is_ok());
    }
}
