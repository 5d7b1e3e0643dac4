//! Locating the cause of a parse error Rhai reports at the end of the file: a `{`, `(`
//! or `[` that is never closed. Rhai sees the missing `}` only when the file ends; the
//! author needs the line where the block began.
//!
//! A small scanner over the source that knows just enough of Rhai's lexical syntax to
//! skip brackets inside comments (`//`, nested `/* */`), strings (`"…"` with escapes),
//! characters (`'x'`) and back-tick strings, whose `${…}` parts are code again.

/// The innermost delimiter still open at the end of `source`: (the character, 1-based
/// line, 1-based column in characters).
pub fn unclosed(source: &str) -> Option<(char, usize, usize)> {
    #[derive(PartialEq)]
    enum Open {
        Bracket(char, usize, usize),
        /// `${` inside a back-tick string: its `}` resumes the string.
        Interpolation,
    }
    let chars: Vec<char> = source.chars().collect();
    let mut stack: Vec<Open> = Vec::new();
    let (mut line, mut col) = (1usize, 1usize);
    let mut i = 0;
    let mut in_backtick = false;
    let advance = |c: char, line: &mut usize, col: &mut usize| {
        if c == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if in_backtick {
            match (c, next) {
                ('`', _) => in_backtick = false,
                ('$', Some('{')) => {
                    stack.push(Open::Interpolation);
                    in_backtick = false;
                    advance(c, &mut line, &mut col);
                    i += 1;
                }
                _ => {}
            }
            advance(chars[i], &mut line, &mut col);
            i += 1;
            continue;
        }
        match (c, next) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    advance(chars[i], &mut line, &mut col);
                    i += 1;
                }
                continue;
            }
            ('/', Some('*')) => {
                let mut depth = 0usize;
                while i < chars.len() {
                    match (chars[i], chars.get(i + 1).copied()) {
                        ('/', Some('*')) => {
                            depth += 1;
                            advance(chars[i], &mut line, &mut col);
                            i += 1;
                        }
                        ('*', Some('/')) => {
                            depth -= 1;
                            advance(chars[i], &mut line, &mut col);
                            i += 1;
                            if depth == 0 {
                                advance(chars[i], &mut line, &mut col);
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    advance(chars[i], &mut line, &mut col);
                    i += 1;
                }
                continue;
            }
            ('"', _) | ('\'', _) => {
                let quote = c;
                advance(c, &mut line, &mut col);
                i += 1;
                while i < chars.len() && chars[i] != quote && chars[i] != '\n' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        advance(chars[i], &mut line, &mut col);
                        i += 1;
                    }
                    advance(chars[i], &mut line, &mut col);
                    i += 1;
                }
            }
            ('`', _) => in_backtick = true,
            ('{', _) | ('(', _) | ('[', _) => stack.push(Open::Bracket(c, line, col)),
            ('}', _) | (')', _) | (']', _) => match stack.pop() {
                Some(Open::Interpolation) if c == '}' => in_backtick = true,
                Some(Open::Bracket(open, l, k)) if matching(open) != c => {
                    // A mismatch: the opener is the likelier culprit; keep scanning
                    // as if it had been closed.
                    let _ = (l, k);
                }
                _ => {}
            },
            _ => {}
        }
        if i < chars.len() {
            advance(chars[i], &mut line, &mut col);
        }
        i += 1;
    }
    stack.into_iter().rev().find_map(|o| match o {
        Open::Bracket(c, l, k) => Some((c, l, k)),
        Open::Interpolation => None,
    })
}

pub fn matching(open: char) -> char {
    match open {
        '{' => '}',
        '(' => ')',
        _ => ']',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unclosed_brace_not_the_end_of_file() {
        let src =
            "fn filter(incident, ctx) {\n    if true {\n        return false;\n    \n    true\n}\n";
        assert_eq!(unclosed(src), Some(('{', 1, 26)));
        // Brackets in strings, comments and interpolations do not count.
        let src = "fn f(a, b) {\n  let s = \"{\"; // {\n  /* { */ let t = `x ${a + \"}\"} {`;\n}\n";
        assert_eq!(unclosed(src), None);
        assert_eq!(unclosed("let a = [1, (2;\n"), Some(('(', 1, 13)));
    }
}
