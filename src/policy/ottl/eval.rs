//! Evaluation of compiled conditions on one scanned span (and event), with
//! the collector's value semantics: `pkg/ottl` compare.go for comparisons
//! (nil equals only nil; mismatched types are unequal and unordered; ints
//! and floats compare numerically), math.go for `+ - * /`, and the getter
//! rules of each converter. Strings stay borrowed from the payload.

use std::borrow::Cow;

use super::compile::{AttrScope, Call, Cond, Const, Field, Val};
use super::lexer::CmpOp;
use super::parser::MathOp;
use crate::model::{RawValue, ScannedAttr, ScannedEvent, SpanView};

/// A runtime value. Strings are bytes: the scanner validated attribute
/// strings already, and comparing needs no UTF-8 check.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum V<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, [u8]>),
    Bytes(Cow<'a, [u8]>),
}

impl V<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            V::Nil => "nil",
            V::Bool(_) => "bool",
            V::Int(_) => "int64",
            V::Float(_) => "float64",
            V::Str(_) => "string",
            V::Bytes(_) => "bytes",
        }
    }
}

/// An evaluation error, e.g. `ToLowerCase` of an int: what `error_mode`
/// decides about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub(crate) String);

type Result<T> = std::result::Result<T, EvalError>;

/// What a condition is evaluated on.
#[derive(Clone, Copy)]
pub(crate) struct Target<'s, 'a> {
    pub span: &'s SpanView<'a>,
    pub event: Option<&'a ScannedEvent>,
}

pub(crate) fn cond(c: &Cond, t: Target<'_, '_>) -> Result<bool> {
    Ok(match c {
        Cond::Const(b) => *b,
        // Short-circuits like the collector, so an erroring right-hand
        // side is not reached when the left side decides.
        Cond::Or(a, b) => cond(a, t)? || cond(b, t)?,
        Cond::And(a, b) => cond(a, t)? && cond(b, t)?,
        Cond::Not(a) => !cond(a, t)?,
        Cond::Cmp(a, op, b) => compare(&value(a, t)?, &value(b, t)?, *op),
        Cond::Call(call) => match self::call(call, t)? {
            V::Bool(b) => b,
            other => {
                return Err(EvalError(format!(
                    "a converter returned {} where a boolean is needed",
                    other.type_name()
                )));
            }
        },
    })
}

fn value<'a>(v: &'a Val, t: Target<'_, 'a>) -> Result<V<'a>> {
    Ok(match v {
        Val::Const(c) => constant(c),
        Val::Field(f) => field(f, t),
        Val::Math(a, op, b) => math(value(a, t)?, *op, value(b, t)?)?,
        Val::Call(c) => call(c, t)?,
    })
}

fn constant(c: &Const) -> V<'_> {
    match c {
        Const::Nil => V::Nil,
        Const::Bool(b) => V::Bool(*b),
        Const::Int(i) => V::Int(*i),
        Const::Float(f) => V::Float(*f),
        Const::Str(s) => V::Str(Cow::Borrowed(s)),
        Const::Bytes(b) => V::Bytes(Cow::Borrowed(b)),
    }
}

fn field<'a>(f: &'a Field, t: Target<'_, 'a>) -> V<'a> {
    let span = t.span;
    let s = span.span;
    let text = |r| V::Str(Cow::Borrowed(span.bytes_at(r)));
    match f {
        Field::Attr(scope, key) => attribute(t, *scope, key),
        Field::ScopeName => text(s.scope_name),
        Field::Name => text(s.name),
        Field::Kind => V::Int(i64::from(s.kind)),
        Field::StatusCode => V::Int(s.status as i64),
        Field::StatusMessage => text(s.status_message),
        Field::TraceState => text(s.trace_state),
        Field::StartNanos => V::Int(s.start_unix_nano as i64),
        Field::EndNanos => V::Int(s.end_unix_nano as i64),
        Field::EventName => t.event.map_or(V::Nil, |e| text(e.name)),
        Field::EventTimeNanos => t.event.map_or(V::Nil, |e| V::Int(e.time_unix_nano as i64)),
    }
}

/// An attribute's value, or nil when absent (or not a scalar: the scan
/// skips arrays and maps).
fn attribute<'a>(t: Target<'_, 'a>, scope: AttrScope, key: &str) -> V<'a> {
    let span = t.span;
    let attrs: &[ScannedAttr] = match scope {
        AttrScope::Span => span.span_attributes(),
        AttrScope::Resource => span.resource_attributes(),
        AttrScope::Event => t.event.map_or(&[], |e| span.attr_range(e.attrs)),
    };
    let found = attrs
        .iter()
        .find(|a| span.bytes_at(a.key) == key.as_bytes());
    match found {
        Some(a) => raw(span, a.value),
        // Jaeger carries the service in the process, not as a tag.
        None if scope == AttrScope::Resource
            && key == super::super::predicate::SERVICE_NAME
            && !span.span.service_name.is_empty() =>
        {
            V::Str(Cow::Borrowed(span.bytes_at(span.span.service_name)))
        }
        None => V::Nil,
    }
}

fn raw<'a>(span: &SpanView<'a>, v: RawValue) -> V<'a> {
    match v {
        RawValue::Str(r) => V::Str(Cow::Borrowed(span.bytes_at(r))),
        RawValue::Bool(b) => V::Bool(b),
        RawValue::Int(i) => V::Int(i),
        RawValue::Double(d) => V::Float(d),
        RawValue::Bytes(r) => V::Bytes(Cow::Borrowed(span.bytes_at(r))),
    }
}

/// compare.go: the operator over two values of any types.
pub(crate) fn compare(a: &V<'_>, b: &V<'_>, op: CmpOp) -> bool {
    use std::cmp::Ordering;
    let ord = |o: Option<Ordering>| match o {
        None => false,
        Some(o) => match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        },
    };
    match (a, b) {
        // nils are equal to each other and unequal to anything else.
        (V::Nil, V::Nil) => matches!(op, CmpOp::Eq | CmpOp::Le | CmpOp::Ge),
        (V::Bool(x), V::Bool(y)) => ord(Some(x.cmp(y))),
        (V::Int(x), V::Int(y)) => ord(Some(x.cmp(y))),
        (V::Int(x), V::Float(y)) => float_cmp(*x as f64, *y, op),
        (V::Float(x), V::Int(y)) => float_cmp(*x, *y as f64, op),
        (V::Float(x), V::Float(y)) => float_cmp(*x, *y, op),
        (V::Str(x), V::Str(y)) => ord(Some(x.as_ref().cmp(y.as_ref()))),
        (V::Bytes(x), V::Bytes(y)) => ord(Some(x.as_ref().cmp(y.as_ref()))),
        // Any other pairing is an invalid comparison: only `!=` holds.
        _ => op == CmpOp::Ne,
    }
}

/// Go's float operators (NaN compares false, except `!=`).
fn float_cmp(x: f64, y: f64, op: CmpOp) -> bool {
    match op {
        CmpOp::Eq => x == y,
        CmpOp::Ne => x != y,
        CmpOp::Lt => x < y,
        CmpOp::Le => x <= y,
        CmpOp::Gt => x > y,
        CmpOp::Ge => x >= y,
    }
}

/// math.go: ints stay ints (wrapping like Go), a float on either side
/// makes a float, division by zero and other types are errors.
fn math<'a>(a: V<'a>, op: MathOp, b: V<'a>) -> Result<V<'a>> {
    let zero = || EvalError("attempted to divide by 0".into());
    match (&a, &b) {
        (V::Int(x), V::Int(y)) => Ok(V::Int(match op {
            MathOp::Add => x.wrapping_add(*y),
            MathOp::Sub => x.wrapping_sub(*y),
            MathOp::Mul => x.wrapping_mul(*y),
            MathOp::Div if *y == 0 => return Err(zero()),
            MathOp::Div => x.wrapping_div(*y),
        })),
        (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_)) => {
            let (x, y) = (as_f64(&a), as_f64(&b));
            Ok(V::Float(match op {
                MathOp::Add => x + y,
                MathOp::Sub => x - y,
                MathOp::Mul => x * y,
                MathOp::Div if y == 0.0 => return Err(zero()),
                MathOp::Div => x / y,
            }))
        }
        (V::Int(_) | V::Float(_), other) | (other, _) => Err(EvalError(format!(
            "math needs int64 or float64 operands, got {}",
            other.type_name()
        ))),
    }
}

fn as_f64(v: &V<'_>) -> f64 {
    match v {
        V::Int(i) => *i as f64,
        V::Float(f) => *f,
        _ => 0.0,
    }
}

fn call<'a>(c: &'a Call, t: Target<'_, 'a>) -> Result<V<'a>> {
    Ok(match c {
        Call::IsMatch(target, re) => match string_like(value(target, t)?) {
            None => V::Bool(false),
            Some(s) => V::Bool(re.is_match(&s)),
        },
        Call::IsString(v) => V::Bool(matches!(value(v, t)?, V::Str(_))),
        Call::IsInt(v) => V::Bool(matches!(value(v, t)?, V::Int(_))),
        Call::IsDouble(v) => V::Bool(matches!(value(v, t)?, V::Float(_))),
        Call::IsBool(v) => V::Bool(matches!(value(v, t)?, V::Bool(_))),
        Call::IsRootSpan => V::Bool(t.span.span.parent_span_id.is_zero()),
        Call::Len(v) => match value(v, t)? {
            V::Str(s) => V::Int(s.len() as i64),
            other => {
                return Err(EvalError(format!(
                    "Len: unsupported type {}",
                    other.type_name()
                )));
            }
        },
        Call::Int(v) => int_like(value(v, t)?)?,
        Call::Double(v) => float_like(value(v, t)?)?,
        Call::String(v) => string_like(value(v, t)?).map_or(V::Nil, V::Str),
        Call::Concat(items, delim) => concat(items, delim, t)?,
        Call::ToLowerCase(v) => case(value(v, t)?, "ToLowerCase", |s| s.to_lowercase())?,
        Call::ToUpperCase(v) => case(value(v, t)?, "ToUpperCase", |s| s.to_uppercase())?,
        Call::HasPrefix(v, p) => {
            let (s, p) = (string(value(v, t)?)?, string(value(p, t)?)?);
            V::Bool(s.starts_with(&p))
        }
        Call::HasSuffix(v, p) => {
            let (s, p) = (string(value(v, t)?)?, string(value(p, t)?)?);
            V::Bool(s.ends_with(&p))
        }
    })
}

/// A `StringGetter`: only strings; nil and other types are type errors.
fn string(v: V<'_>) -> Result<Cow<'_, [u8]>> {
    match v {
        V::Str(s) => Ok(s),
        other => Err(EvalError(format!(
            "expected string but got {}",
            other.type_name()
        ))),
    }
}

/// A `StringLikeGetter`: nil stays nil, scalars become their text, bytes
/// their hex.
fn string_like(v: V<'_>) -> Option<Cow<'_, [u8]>> {
    Some(match v {
        V::Nil => return None,
        V::Str(s) => s,
        V::Bool(b) => Cow::Owned(b.to_string().into_bytes()),
        V::Int(i) => Cow::Owned(i.to_string().into_bytes()),
        V::Float(f) => Cow::Owned(f.to_string().into_bytes()),
        V::Bytes(b) => Cow::Owned(hex::encode(b).into_bytes()),
    })
}

/// An `IntLikeGetter`: floats truncate, bools are 0/1, unparsable strings
/// are nil, bytes are a type error.
fn int_like(v: V<'_>) -> Result<V<'static>> {
    Ok(match v {
        V::Nil => V::Nil,
        V::Int(i) => V::Int(i),
        V::Float(f) => V::Int(f as i64),
        V::Bool(b) => V::Int(i64::from(b)),
        V::Str(s) => std::str::from_utf8(&s)
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(V::Nil, V::Int),
        V::Bytes(_) => return Err(EvalError("Int: unsupported type bytes".into())),
    })
}

/// A `FloatLikeGetter`: like [`int_like`], but an unparsable string is an
/// error, as upstream.
fn float_like(v: V<'_>) -> Result<V<'static>> {
    Ok(match v {
        V::Nil => V::Nil,
        V::Int(i) => V::Float(i as f64),
        V::Float(f) => V::Float(f),
        V::Bool(b) => V::Float(if b { 1.0 } else { 0.0 }),
        V::Str(s) => {
            let text = String::from_utf8_lossy(&s);
            V::Float(
                text.trim().parse().map_err(|_| {
                    EvalError(format!("Double: cannot parse \"{text}\" as a float"))
                })?,
            )
        }
        V::Bytes(_) => return Err(EvalError("Double: unsupported type bytes".into())),
    })
}

fn concat<'a>(items: &'a [Val], delim: &'a Val, t: Target<'_, 'a>) -> Result<V<'a>> {
    let delim = string(value(delim, t)?)?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(&delim);
        }
        match string_like(value(item, t)?) {
            Some(s) => out.extend_from_slice(&s),
            // Go's fmt.Sprint of a nil value.
            None => out.extend_from_slice(b"<nil>"),
        }
    }
    Ok(V::Str(Cow::Owned(out)))
}

fn case<'a>(v: V<'a>, name: &str, f: impl Fn(&str) -> String) -> Result<V<'a>> {
    let s = string(v).map_err(|e| EvalError(format!("{name}: {e}")))?;
    Ok(V::Str(Cow::Owned(
        f(&String::from_utf8_lossy(&s)).into_bytes(),
    )))
}
