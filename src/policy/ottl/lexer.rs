//! Tokens of OTTL conditions, as the collector's lexer splits them (its
//! `buildLexer` in grammar.go): literals, paths' identifiers, operators.

use super::OttlError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Token {
    Str(String),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    Bool(bool),
    Nil,
    Not,
    And,
    Or,
    /// Any other word: path segments, converters and enums (`SPAN_KIND_SERVER`).
    Ident(String),
    Cmp(CmpOp),
    Plus,
    Minus,
    Star,
    Slash,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// Splits a condition into tokens.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, OttlError> {
    let mut out = Vec::new();
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        i += 1;
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b'"' => {
                let (s, end) = string(src, start)?;
                i = end;
                Token::Str(s)
            }
            b'0'..=b'9' => {
                let (t, end) = number(src, start, false)?;
                i = end;
                t
            }
            // A sign belongs to a number unless it follows a value, so
            // `end - start` is a subtraction and `> -1` a negative literal.
            b'-' | b'+'
                if b.get(i).is_some_and(|d| d.is_ascii_digit() || *d == b'.')
                    && !out.last().is_some_and(ends_value) =>
            {
                let (t, end) = number(src, start, true)?;
                i = end;
                t
            }
            b'-' => Token::Minus,
            b'+' => Token::Plus,
            b'*' => Token::Star,
            b'/' => Token::Slash,
            b'(' => Token::LParen,
            b')' => Token::RParen,
            b'[' => Token::LBracket,
            b']' => Token::RBracket,
            b',' => Token::Comma,
            b'.' if b.get(i).is_some_and(u8::is_ascii_digit) => {
                let (t, end) = number(src, start, false)?;
                i = end;
                t
            }
            b'.' => Token::Dot,
            b'=' | b'!' | b'<' | b'>' => {
                let two = b.get(i) == Some(&b'=');
                let op = match (c, two) {
                    (b'=', true) => CmpOp::Eq,
                    (b'!', true) => CmpOp::Ne,
                    (b'<', true) => CmpOp::Le,
                    (b'>', true) => CmpOp::Ge,
                    (b'<', false) => CmpOp::Lt,
                    (b'>', false) => CmpOp::Gt,
                    _ => return Err(OttlError::syntax(format!("unexpected `{}`", c as char))),
                };
                i += usize::from(two);
                Token::Cmp(op)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while b
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    i += 1;
                }
                word(&src[start..i])
            }
            _ => {
                let ch = src[start..].chars().next().unwrap_or('?');
                return Err(OttlError::syntax(format!("unexpected `{ch}`")));
            }
        };
        out.push(token);
    }
    Ok(out)
}

fn ends_value(t: &Token) -> bool {
    matches!(
        t,
        Token::Str(_)
            | Token::Int(_)
            | Token::Float(_)
            | Token::Bytes(_)
            | Token::Bool(_)
            | Token::Nil
            | Token::Ident(_)
            | Token::RParen
            | Token::RBracket
    )
}

fn word(w: &str) -> Token {
    match w {
        "true" => Token::Bool(true),
        "false" => Token::Bool(false),
        "nil" => Token::Nil,
        "not" => Token::Not,
        "and" => Token::And,
        "or" => Token::Or,
        _ => Token::Ident(w.to_string()),
    }
}

/// A double-quoted string from `start`; returns it unescaped and the index
/// after the closing quote.
fn string(src: &str, start: usize) -> Result<(String, usize), OttlError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, start + 1 + i + 1)),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, c)) => out.push(c),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(OttlError::syntax("unterminated string"))
}

/// An int, float (`1.5`, `.5`, `1e3` only after a fraction, as upstream) or
/// `0x…` bytes literal from `start`.
fn number(src: &str, start: usize, signed: bool) -> Result<(Token, usize), OttlError> {
    let b = src.as_bytes();
    let digits_from = start + usize::from(signed);
    if !signed && b[start..].starts_with(b"0x") {
        let mut end = start + 2;
        while b.get(end).is_some_and(u8::is_ascii_hexdigit) {
            end += 1;
        }
        let hex_digits = &src[start + 2..end];
        let bytes = hex::decode(hex_digits)
            .map_err(|_| OttlError::syntax(format!("invalid bytes literal `0x{hex_digits}`")))?;
        return Ok((Token::Bytes(bytes), end));
    }
    let mut end = digits_from;
    while b.get(end).is_some_and(u8::is_ascii_digit) {
        end += 1;
    }
    let mut float = false;
    if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
        float = true;
        end += 1;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if matches!(b.get(end), Some(b'e' | b'E')) {
            let mut e = end + 1;
            if matches!(b.get(e), Some(b'+' | b'-')) {
                e += 1;
            }
            if b.get(e).is_some_and(u8::is_ascii_digit) {
                while b.get(e).is_some_and(u8::is_ascii_digit) {
                    e += 1;
                }
                end = e;
            }
        }
    }
    let text = &src[start..end];
    let token = if float {
        Token::Float(
            text.parse()
                .map_err(|_| OttlError::syntax(format!("invalid number `{text}`")))?,
        )
    } else {
        Token::Int(
            text.parse()
                .map_err(|_| OttlError::syntax(format!("integer out of range `{text}`")))?,
        )
    };
    Ok((token, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths_literals_and_operators() {
        let t = tokenize(r#"attributes["http.route"] == "/a\"b" and not x >= -1.5"#).unwrap();
        assert_eq!(
            t,
            vec![
                Token::Ident("attributes".into()),
                Token::LBracket,
                Token::Str("http.route".into()),
                Token::RBracket,
                Token::Cmp(CmpOp::Eq),
                Token::Str("/a\"b".into()),
                Token::And,
                Token::Not,
                Token::Ident("x".into()),
                Token::Cmp(CmpOp::Ge),
                Token::Float(-1.5),
            ]
        );
    }

    #[test]
    fn a_minus_after_a_value_subtracts() {
        let t = tokenize("end_time_unix_nano - start_time_unix_nano > 1000000000").unwrap();
        assert_eq!(t[1], Token::Minus);
        assert_eq!(t[4], Token::Int(1_000_000_000));
        assert_eq!(tokenize("a-1").unwrap()[1], Token::Minus);
        assert_eq!(
            tokenize("0x0aff").unwrap(),
            vec![Token::Bytes(vec![10, 255])]
        );
        assert_eq!(tokenize("nil != true").unwrap()[0], Token::Nil);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for (src, msg) in [
            ("name == \"open", "unterminated string"),
            ("name = 1", "unexpected `=`"),
            ("name == 'x'", "unexpected `'`"),
            ("x == 99999999999999999999", "integer out of range"),
        ] {
            let e = tokenize(src).unwrap_err().to_string();
            assert!(e.contains(msg), "{src}: {e}");
        }
    }
}
