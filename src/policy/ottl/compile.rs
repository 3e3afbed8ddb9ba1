//! Typed, resolved form of a parsed condition: paths become [`Field`]s of
//! the scanned span, enums become integers, converters are checked for
//! name and arity and their regexes compiled. Everything outside the
//! supported subset is an error naming the path or function, so a
//! condition never silently evaluates to false.

use regex::bytes::Regex;

use super::OttlError;
use super::lexer::CmpOp;
use super::parser::{Expr, Key, Lit, MathOp};

/// Which object a condition is evaluated on, as in the collector's
/// `ottlspan` and `ottlspanevent` contexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OttlContext {
    Span,
    SpanEvent,
}

/// Where an attribute lookup reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttrScope {
    Span,
    Resource,
    Event,
}

/// A fact of the span (or event) a condition reads.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Field {
    Attr(AttrScope, Box<str>),
    ScopeName,
    Name,
    Kind,
    StatusCode,
    StatusMessage,
    TraceState,
    StartNanos,
    EndNanos,
    EventName,
    EventTimeNanos,
}

/// A literal value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Const {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<[u8]>),
    Bytes(Box<[u8]>),
}

pub(crate) enum Val {
    Const(Const),
    Field(Field),
    Math(Box<Val>, MathOp, Box<Val>),
    Call(Box<Call>),
}

/// The converters of the supported subset, with their upstream getter
/// semantics noted where they differ.
pub(crate) enum Call {
    /// Target is string-like (numbers and bools converted); nil is false.
    IsMatch(Val, Regex),
    IsString(Val),
    IsInt(Val),
    IsDouble(Val),
    IsBool(Val),
    IsRootSpan,
    /// Byte length of a string; anything else is an error.
    Len(Val),
    Int(Val),
    Double(Val),
    String(Val),
    Concat(Vec<Val>, Val),
    ToLowerCase(Val),
    ToUpperCase(Val),
    HasPrefix(Val, Val),
    HasSuffix(Val, Val),
}

impl Call {
    fn returns_bool(&self) -> bool {
        matches!(
            self,
            Self::IsMatch(..)
                | Self::IsString(_)
                | Self::IsInt(_)
                | Self::IsDouble(_)
                | Self::IsBool(_)
                | Self::IsRootSpan
                | Self::HasPrefix(..)
                | Self::HasSuffix(..)
        )
    }
}

pub(crate) enum Cond {
    Const(bool),
    Or(Box<Cond>, Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(Val, CmpOp, Val),
    /// A converter returning a boolean.
    Call(Box<Call>),
}

/// Compiles one parsed condition for `ctx`, calling `field_seen` for every
/// field it reads (so the scanner can be told what to record).
pub(crate) fn condition(
    e: &Expr,
    ctx: OttlContext,
    field_seen: &mut dyn FnMut(&Field),
) -> Result<Cond, OttlError> {
    Compiler { ctx, field_seen }.cond(e)
}

struct Compiler<'f> {
    ctx: OttlContext,
    field_seen: &'f mut dyn FnMut(&Field),
}

/// What a condition may be, for error messages.
const NOT_A_CONDITION: &str = "a condition must be a comparison, `true`/`false`, a boolean converter, or `not`/`and`/`or` of those";

impl Compiler<'_> {
    fn cond(&mut self, e: &Expr) -> Result<Cond, OttlError> {
        Ok(match e {
            Expr::Or(a, b) => Cond::Or(Box::new(self.cond(a)?), Box::new(self.cond(b)?)),
            Expr::And(a, b) => Cond::And(Box::new(self.cond(a)?), Box::new(self.cond(b)?)),
            Expr::Not(a) => Cond::Not(Box::new(self.cond(a)?)),
            Expr::Cmp(a, op, b) => Cond::Cmp(self.operand(a)?, *op, self.operand(b)?),
            Expr::Lit(Lit::Bool(b)) => Cond::Const(*b),
            Expr::Call(name, args) => {
                let call = self.call(name, args)?;
                if !call.returns_bool() {
                    return Err(OttlError::syntax(format!(
                        "`{name}` does not return a boolean; {NOT_A_CONDITION}"
                    )));
                }
                Cond::Call(Box::new(call))
            }
            _ => return Err(OttlError::syntax(NOT_A_CONDITION)),
        })
    }

    /// A comparison operand: a value, never a boolean expression.
    fn operand(&mut self, e: &Expr) -> Result<Val, OttlError> {
        match e {
            Expr::Or(..) | Expr::And(..) | Expr::Not(_) | Expr::Cmp(..) => Err(OttlError::syntax(
                "a comparison operand cannot be a boolean expression",
            )),
            _ => self.value(e),
        }
    }

    fn value(&mut self, e: &Expr) -> Result<Val, OttlError> {
        Ok(match e {
            Expr::Lit(l) => Val::Const(literal(l)),
            Expr::Enum(name) => Val::Const(Const::Int(enum_value(name)?)),
            Expr::Path(segments, keys) => {
                let f = self.path(segments, keys)?;
                (self.field_seen)(&f);
                Val::Field(f)
            }
            Expr::Math(a, op, b) => {
                Val::Math(Box::new(self.value(a)?), *op, Box::new(self.value(b)?))
            }
            Expr::Call(name, args) => Val::Call(Box::new(self.call(name, args)?)),
            Expr::List(_) => {
                return Err(OttlError::unsupported(
                    "a list outside `Concat`'s first argument",
                ));
            }
            Expr::Or(..) | Expr::And(..) | Expr::Not(_) | Expr::Cmp(..) => {
                return Err(OttlError::syntax(
                    "a boolean expression cannot be used as a value",
                ));
            }
        })
    }

    fn path(&self, segments: &[String], keys: &[Key]) -> Result<Field, OttlError> {
        let names: Vec<&str> = segments.iter().map(String::as_str).collect();
        let text = render_path(segments, keys);
        let unsupported = || OttlError::unsupported(format!("path `{text}`"));
        // Explicit context prefixes, as newer collectors write them.
        let (on_span, rest): (bool, &[&str]) = match (self.ctx, names.as_slice()) {
            (_, ["resource", rest @ ..]) => return resource(rest, keys).ok_or_else(unsupported),
            (_, ["instrumentation_scope" | "scope", "name"]) if keys.is_empty() => {
                return Ok(Field::ScopeName);
            }
            (OttlContext::Span, ["span", rest @ ..]) => (true, rest),
            (OttlContext::Span, rest) => (true, rest),
            (OttlContext::SpanEvent, ["span", rest @ ..]) => (true, rest),
            (OttlContext::SpanEvent, ["spanevent", rest @ ..]) => (false, rest),
            (OttlContext::SpanEvent, rest) => (false, rest),
        };
        let field = if on_span {
            span_field(rest, keys)
        } else {
            event_field(rest, keys)
        };
        field.ok_or_else(unsupported)
    }

    fn call(&mut self, name: &str, args: &[Expr]) -> Result<Call, OttlError> {
        let arity = |n: usize| -> Result<(), OttlError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(OttlError::syntax(format!(
                    "`{name}` takes {n} argument{}, got {}",
                    if n == 1 { "" } else { "s" },
                    args.len()
                )))
            }
        };
        let one = |c: &mut Self| -> Result<Val, OttlError> {
            arity(1)?;
            c.value(&args[0])
        };
        Ok(match name {
            "IsMatch" => {
                arity(2)?;
                let target = self.value(&args[0])?;
                let Expr::Lit(Lit::Str(pattern)) = &args[1] else {
                    return Err(OttlError::unsupported(
                        "`IsMatch` with a pattern that is not a string literal",
                    ));
                };
                let re = Regex::new(pattern).map_err(|e| {
                    OttlError::syntax(format!("`IsMatch`: invalid regex \"{pattern}\": {e}"))
                })?;
                Call::IsMatch(target, re)
            }
            "IsString" => Call::IsString(one(self)?),
            "IsInt" => Call::IsInt(one(self)?),
            "IsDouble" => Call::IsDouble(one(self)?),
            "IsBool" => Call::IsBool(one(self)?),
            "IsRootSpan" if self.ctx == OttlContext::Span => {
                arity(0)?;
                Call::IsRootSpan
            }
            "Len" => Call::Len(one(self)?),
            "Int" => Call::Int(one(self)?),
            "Double" => Call::Double(one(self)?),
            "String" => Call::String(one(self)?),
            "ToLowerCase" => Call::ToLowerCase(one(self)?),
            "ToUpperCase" => Call::ToUpperCase(one(self)?),
            "HasPrefix" | "HasSuffix" => {
                arity(2)?;
                let (t, p) = (self.value(&args[0])?, self.value(&args[1])?);
                match name {
                    "HasPrefix" => Call::HasPrefix(t, p),
                    _ => Call::HasSuffix(t, p),
                }
            }
            "Concat" => {
                arity(2)?;
                let Expr::List(items) = &args[0] else {
                    return Err(OttlError::syntax("`Concat` takes a list `[...]` first"));
                };
                let vals = items
                    .iter()
                    .map(|i| self.value(i))
                    .collect::<Result<_, _>>()?;
                Call::Concat(vals, self.value(&args[1])?)
            }
            _ => return Err(OttlError::unsupported(format!("function `{name}`"))),
        })
    }
}

fn literal(l: &Lit) -> Const {
    match l {
        Lit::Str(s) => Const::Str(s.as_bytes().into()),
        Lit::Int(i) => Const::Int(*i),
        Lit::Float(f) => Const::Float(*f),
        Lit::Bytes(b) => Const::Bytes(b.as_slice().into()),
        Lit::Bool(b) => Const::Bool(*b),
        Lit::Nil => Const::Nil,
    }
}

/// The OTTL span enums (`ottlspan`'s symbol table).
fn enum_value(name: &str) -> Result<i64, OttlError> {
    Ok(match name {
        "SPAN_KIND_UNSPECIFIED" => 0,
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        "STATUS_CODE_UNSET" => 0,
        "STATUS_CODE_OK" => 1,
        "STATUS_CODE_ERROR" => 2,
        _ => return Err(OttlError::unsupported(format!("enum `{name}`"))),
    })
}

/// `attributes["k"]` with exactly one string key.
fn attr_key(keys: &[Key]) -> Option<Box<str>> {
    match keys {
        [Key::Str(k)] => Some(k.as_str().into()),
        _ => None,
    }
}

fn resource(rest: &[&str], keys: &[Key]) -> Option<Field> {
    match rest {
        ["attributes"] => Some(Field::Attr(AttrScope::Resource, attr_key(keys)?)),
        _ => None,
    }
}

fn span_field(rest: &[&str], keys: &[Key]) -> Option<Field> {
    if let ["attributes"] = rest {
        return Some(Field::Attr(AttrScope::Span, attr_key(keys)?));
    }
    if !keys.is_empty() {
        return None;
    }
    Some(match rest {
        ["name"] => Field::Name,
        ["kind"] => Field::Kind,
        ["status", "code"] => Field::StatusCode,
        ["status", "message"] => Field::StatusMessage,
        ["trace_state"] => Field::TraceState,
        ["start_time_unix_nano"] => Field::StartNanos,
        ["end_time_unix_nano"] => Field::EndNanos,
        _ => return None,
    })
}

fn event_field(rest: &[&str], keys: &[Key]) -> Option<Field> {
    match rest {
        ["attributes"] => Some(Field::Attr(AttrScope::Event, attr_key(keys)?)),
        ["name"] if keys.is_empty() => Some(Field::EventName),
        ["time_unix_nano"] if keys.is_empty() => Some(Field::EventTimeNanos),
        _ => None,
    }
}

fn render_path(segments: &[String], keys: &[Key]) -> String {
    let mut s = segments.join(".");
    for k in keys {
        match k {
            Key::Str(k) => s.push_str(&format!("[\"{k}\"]")),
            Key::Int(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}
