//! OTTL conditions parsed into an untyped [`Expr`] tree. Precedence, lowest
//! first, as in the collector's grammar: `or`, `and`, `not`, comparisons
//! (not chained), `+ -`, `* /`, then literals, paths, enums, converter
//! calls, lists and parentheses. Whether an expression is a boolean or a
//! value is checked when it is compiled.

use super::OttlError;
use super::lexer::{CmpOp, Token, tokenize};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MathOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    Bool(bool),
    Nil,
}

/// A key after a path: `attributes["k"]` or `list[0]`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Key {
    Str(String),
    Int(i64),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
    Math(Box<Expr>, MathOp, Box<Expr>),
    Lit(Lit),
    /// `resource.attributes["k"]`: dotted segments, then keys.
    Path(Vec<String>, Vec<Key>),
    /// An all-caps name such as `SPAN_KIND_SERVER`.
    Enum(String),
    Call(String, Vec<Expr>),
    List(Vec<Expr>),
}

/// Parses one condition.
pub(crate) fn parse(src: &str) -> Result<Expr, OttlError> {
    let tokens = tokenize(src)?;
    let mut p = Parser { tokens, pos: 0 };
    let e = p.or()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(OttlError::syntax(format!(
            "unexpected {} after a complete condition",
            describe(t)
        ))),
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

fn describe(t: &Token) -> String {
    match t {
        Token::Str(s) => format!("string \"{s}\""),
        Token::Int(i) => format!("`{i}`"),
        Token::Float(f) => format!("`{f}`"),
        Token::Bytes(_) => "a bytes literal".into(),
        Token::Bool(b) => format!("`{b}`"),
        Token::Nil => "`nil`".into(),
        Token::Not => "`not`".into(),
        Token::And => "`and`".into(),
        Token::Or => "`or`".into(),
        Token::Ident(s) => format!("`{s}`"),
        Token::Cmp(op) => format!("`{}`", op.as_str()),
        Token::Plus => "`+`".into(),
        Token::Minus => "`-`".into(),
        Token::Star => "`*`".into(),
        Token::Slash => "`/`".into(),
        Token::LParen => "`(`".into(),
        Token::RParen => "`)`".into(),
        Token::LBracket => "`[`".into(),
        Token::RBracket => "`]`".into(),
        Token::Comma => "`,`".into(),
        Token::Dot => "`.`".into(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += usize::from(t.is_some());
        t
    }

    fn eat(&mut self, t: &Token) -> bool {
        let hit = self.peek() == Some(t);
        self.pos += usize::from(hit);
        hit
    }

    fn expect(&mut self, t: &Token) -> Result<(), OttlError> {
        if self.eat(t) {
            return Ok(());
        }
        Err(OttlError::syntax(match self.peek() {
            Some(found) => format!("expected {}, found {}", describe(t), describe(found)),
            None => format!("expected {} at the end", describe(t)),
        }))
    }

    fn or(&mut self) -> Result<Expr, OttlError> {
        let mut e = self.and()?;
        while self.eat(&Token::Or) {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, OttlError> {
        let mut e = self.not()?;
        while self.eat(&Token::And) {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, OttlError> {
        if self.eat(&Token::Not) {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, OttlError> {
        let left = self.sum()?;
        let Some(Token::Cmp(op)) = self.peek().cloned() else {
            return Ok(left);
        };
        self.pos += 1;
        let right = self.sum()?;
        if let Some(Token::Cmp(_)) = self.peek() {
            return Err(OttlError::syntax("comparisons cannot be chained"));
        }
        Ok(Expr::Cmp(Box::new(left), op, Box::new(right)))
    }

    fn sum(&mut self) -> Result<Expr, OttlError> {
        let mut e = self.product()?;
        loop {
            let op = match self.peek() {
                Some(Token::Plus) => MathOp::Add,
                Some(Token::Minus) => MathOp::Sub,
                _ => return Ok(e),
            };
            self.pos += 1;
            e = Expr::Math(Box::new(e), op, Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, OttlError> {
        let mut e = self.primary()?;
        loop {
            let op = match self.peek() {
                Some(Token::Star) => MathOp::Mul,
                Some(Token::Slash) => MathOp::Div,
                _ => return Ok(e),
            };
            self.pos += 1;
            e = Expr::Math(Box::new(e), op, Box::new(self.primary()?));
        }
    }

    fn primary(&mut self) -> Result<Expr, OttlError> {
        let Some(t) = self.next() else {
            return Err(OttlError::syntax("unexpected end of condition"));
        };
        Ok(match t {
            Token::Str(s) => Expr::Lit(Lit::Str(s)),
            Token::Int(i) => Expr::Lit(Lit::Int(i)),
            Token::Float(f) => Expr::Lit(Lit::Float(f)),
            Token::Bytes(b) => Expr::Lit(Lit::Bytes(b)),
            Token::Bool(b) => Expr::Lit(Lit::Bool(b)),
            Token::Nil => Expr::Lit(Lit::Nil),
            Token::LParen => {
                let e = self.or()?;
                self.expect(&Token::RParen)?;
                e
            }
            Token::LBracket => Expr::List(self.items(&Token::RBracket)?),
            Token::Ident(name) => self.named(name)?,
            other => {
                return Err(OttlError::syntax(format!(
                    "unexpected {}",
                    describe(&other)
                )));
            }
        })
    }

    /// A converter call, an enum or a path, by what follows the name.
    fn named(&mut self, name: String) -> Result<Expr, OttlError> {
        if self.eat(&Token::LParen) {
            let args = self.items(&Token::RParen)?;
            if self.peek() == Some(&Token::LBracket) {
                return Err(OttlError::unsupported(format!(
                    "keys on the result of `{name}`"
                )));
            }
            return Ok(Expr::Call(name, args));
        }
        let is_enum = name
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
        if is_enum && self.peek() != Some(&Token::Dot) {
            return Ok(Expr::Enum(name));
        }
        let mut segments = vec![name];
        while self.eat(&Token::Dot) {
            match self.next() {
                Some(Token::Ident(s)) => segments.push(s),
                Some(t) => {
                    return Err(OttlError::syntax(format!(
                        "expected a path segment after `.`, found {}",
                        describe(&t)
                    )));
                }
                None => return Err(OttlError::syntax("a path cannot end with `.`")),
            }
        }
        let mut keys = Vec::new();
        while self.eat(&Token::LBracket) {
            keys.push(match self.next() {
                Some(Token::Str(s)) => Key::Str(s),
                Some(Token::Int(i)) => Key::Int(i),
                _ => return Err(OttlError::syntax("a key must be a string or an integer")),
            });
            self.expect(&Token::RBracket)?;
        }
        Ok(Expr::Path(segments, keys))
    }

    /// Comma-separated expressions up to `close`.
    fn items(&mut self, close: &Token) -> Result<Vec<Expr>, OttlError> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.or()?);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(&Token::Comma)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &[&str], keys: &[&str]) -> Expr {
        Expr::Path(
            s.iter().map(|s| s.to_string()).collect(),
            keys.iter().map(|k| Key::Str(k.to_string())).collect(),
        )
    }

    #[test]
    fn precedence_is_or_and_not_comparison_math() {
        let e = parse("not a == 1 or b and c").unwrap();
        let Expr::Or(left, right) = e else {
            panic!("{e:?}")
        };
        assert!(matches!(*left, Expr::Not(ref inner) if matches!(**inner, Expr::Cmp(..))));
        assert!(matches!(*right, Expr::And(..)));
        let e = parse("end_time_unix_nano - start_time_unix_nano > 1000 * 2").unwrap();
        let Expr::Cmp(l, CmpOp::Gt, r) = e else {
            panic!()
        };
        assert!(matches!(*l, Expr::Math(_, MathOp::Sub, _)));
        assert!(matches!(*r, Expr::Math(_, MathOp::Mul, _)));
    }

    #[test]
    fn paths_enums_calls_and_lists() {
        assert_eq!(
            parse(r#"resource.attributes["service.name"]"#).unwrap(),
            path(&["resource", "attributes"], &["service.name"])
        );
        assert_eq!(
            parse("kind == SPAN_KIND_SERVER").unwrap(),
            Expr::Cmp(
                Box::new(path(&["kind"], &[])),
                CmpOp::Eq,
                Box::new(Expr::Enum("SPAN_KIND_SERVER".into()))
            )
        );
        assert_eq!(
            parse(r#"Concat(["a", name], "-")"#).unwrap(),
            Expr::Call(
                "Concat".into(),
                vec![
                    Expr::List(vec![Expr::Lit(Lit::Str("a".into())), path(&["name"], &[])]),
                    Expr::Lit(Lit::Str("-".into()))
                ]
            )
        );
        assert!(matches!(parse("(a == 1)").unwrap(), Expr::Cmp(..)));
    }

    #[test]
    fn syntax_errors_say_what_was_found() {
        for (src, msg) in [
            ("a == 1 == 2", "comparisons cannot be chained"),
            ("a ==", "unexpected end of condition"),
            ("(a == 1", "expected `)` at the end"),
            ("a == 1 b", "unexpected `b` after a complete condition"),
            ("attributes[name]", "a key must be a string or an integer"),
            (
                "Split(name, \",\")[0] == \"x\"",
                "keys on the result of `Split`",
            ),
            ("resource.", "a path cannot end with `.`"),
        ] {
            let e = parse(src).unwrap_err().to_string();
            assert!(e.contains(msg), "{src}: {e}");
        }
    }
}
