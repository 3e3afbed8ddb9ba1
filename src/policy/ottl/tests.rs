//! Each OTTL construct evaluated on spans scanned from real OTLP (and
//! Jaeger) messages, with the scan told only what the conditions need.

use bytes::Bytes;
use prost::Message;

use super::*;
use crate::config::EncodingSetting;
use crate::decode::Decoder;
use crate::decode::fixtures::{SpanSpec, jaeger_proto, otlp_request};
use crate::model::{AttributeKeys, ScanBatch, SpanStatus};

/// A server root span of `checkout` (resource `deployment.environment`),
/// `GET /cart`, 1.5 s, with `http.route`, `http.status_code`, a double, a
/// bool; status ERROR (so it carries an `exception` event).
fn spec() -> SpanSpec {
    SpanSpec::new([7; 16], [1; 8])
        .service("checkout")
        .name("GET /cart")
        .times(1_000_000_000, 2_500_000_000)
        .status(SpanStatus::Error)
        .trace_state("ot=th:8")
        .attr("http.route", "/cart")
        .attr("http.status_code", 503)
        .attr("ratio", 0.25)
        .attr("cached", false)
        .attr("count", "42")
        .resource_attr("deployment.environment", "prod")
}

fn compile(span: &[&str], events: &[&str], mode: ErrorMode) -> Result<SpanConditions, OttlError> {
    let s: Vec<String> = span.iter().map(|s| s.to_string()).collect();
    let e: Vec<String> = events.iter().map(|s| s.to_string()).collect();
    SpanConditions::compile(&s, &e, mode, "test")
}

/// Scans `message` with exactly the keys and extras `c` asks for.
fn eval_bytes(
    c: &SpanConditions,
    message: Vec<u8>,
    setting: EncodingSetting,
) -> Result<bool, EvalError> {
    let keys = AttributeKeys::new(c.attribute_keys()).with_extras(c.extras().clone());
    let decoder = Decoder::new(setting, keys, 1 << 20);
    let mut batch = ScanBatch::default();
    let normalized = decoder
        .scan(Bytes::from(message), None, &mut batch)
        .expect("fixture scans");
    c.matches(&batch.view(0, &normalized.bytes))
}

fn eval_with(span: &[&str], events: &[&str], mode: ErrorMode) -> Result<bool, EvalError> {
    let c = compile(span, events, mode).expect("compiles");
    eval_bytes(
        &c,
        otlp_request(&[spec()]).encode_to_vec(),
        EncodingSetting::OtlpProto,
    )
}

fn holds(cond: &str) -> bool {
    eval_with(&[cond], &[], ErrorMode::Propagate).unwrap_or_else(|e| panic!("{cond}: {e}"))
}

fn event_holds(cond: &str) -> bool {
    eval_with(&[], &[cond], ErrorMode::Propagate).unwrap_or_else(|e| panic!("{cond}: {e}"))
}

fn compile_error(cond: &str) -> String {
    match compile(&[cond], &[], ErrorMode::Propagate) {
        Ok(_) => panic!("{cond} compiled"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn attribute_paths_read_span_and_resource() {
    assert!(holds(r#"attributes["http.route"] == "/cart""#));
    assert!(!holds(r#"attributes["http.route"] == "/health""#));
    assert!(holds(r#"span.attributes["http.route"] != "/health""#));
    assert!(holds(
        r#"resource.attributes["deployment.environment"] == "prod""#
    ));
    assert!(holds(
        r#"resource.attributes["service.name"] == "checkout""#
    ));
    // Span attributes are not resource attributes and vice versa.
    assert!(holds(r#"attributes["deployment.environment"] == nil"#));
    assert!(holds(r#"resource.attributes["http.route"] == nil"#));
}

#[test]
fn span_fields_kind_status_and_enums() {
    assert!(holds(r#"name == "GET /cart""#));
    assert!(holds("kind == SPAN_KIND_SERVER"));
    assert!(!holds("kind == SPAN_KIND_CLIENT"));
    assert!(holds("kind == 2"));
    assert!(holds("status.code == STATUS_CODE_ERROR"));
    assert!(holds(r#"status.message == "upstream request failed""#));
    assert!(holds(r#"trace_state == "ot=th:8""#));
    assert!(holds(
        r#"instrumentation_scope.name == "io.opentelemetry.tomcat-10.0""#
    ));
    assert!(holds("start_time_unix_nano == 1000000000"));
    assert!(holds("end_time_unix_nano >= 2500000000"));
}

#[test]
fn the_span_duration_idiom_and_math() {
    assert!(holds(
        "end_time_unix_nano - start_time_unix_nano > 1000000000"
    ));
    assert!(!holds(
        "end_time_unix_nano - start_time_unix_nano > 2000000000"
    ));
    assert!(holds(
        "(end_time_unix_nano - start_time_unix_nano) / 1000000 == 1500"
    ));
    assert!(holds(r#"attributes["http.status_code"] * 2 + 1 == 1007"#));
    // int and float mix into a float.
    assert!(holds(r#"attributes["ratio"] * 4 == 1"#));
    assert!(holds("1 + 0.5 == 1.5"));
}

#[test]
fn literals_compare_like_the_collector() {
    assert!(holds(r#"attributes["http.status_code"] >= 500"#));
    assert!(holds(r#"attributes["http.status_code"] < 503.5"#));
    assert!(holds(r#"attributes["ratio"] == 0.25"#));
    assert!(holds(r#"attributes["cached"] == false"#));
    assert!(holds(r#"attributes["cached"] != true"#));
    assert!(holds(r#"name > "GET""#));
    assert!(holds("nil == nil"));
    assert!(holds(r#"attributes["missing"] == nil"#));
    // Mismatched types: unequal, and never ordered.
    assert!(holds(r#"attributes["http.status_code"] != "503""#));
    assert!(!holds(r#"attributes["http.status_code"] == "503""#));
    assert!(!holds(r#"attributes["missing"] > 1"#));
    assert!(!holds(r#"attributes["missing"] < 1"#));
    assert!(holds(r#"attributes["missing"] != 1"#));
    assert!(holds("0x0102 == 0x0102"));
    assert!(holds("true"));
    assert!(!holds("false"));
}

#[test]
fn boolean_operators_and_parentheses() {
    assert!(holds(r#"name == "GET /cart" and kind == SPAN_KIND_SERVER"#));
    assert!(!holds(r#"name == "x" and kind == SPAN_KIND_SERVER"#));
    assert!(holds(r#"name == "x" or kind == SPAN_KIND_SERVER"#));
    assert!(holds(r#"not name == "x""#));
    assert!(!holds(r#"not (name == "x" or kind == SPAN_KIND_SERVER)"#));
    assert!(holds(
        r#"(name == "x" or name == "GET /cart") and not IsRootSpan() == false"#
    ));
    // `and` binds tighter than `or`.
    assert!(holds(r#"true or false and false"#));
}

#[test]
fn converters() {
    assert!(holds(r#"IsMatch(attributes["http.route"], "^/ca")"#));
    assert!(!holds(r#"IsMatch(attributes["http.route"], "^/health")"#));
    // Targets are string-like: numbers match as text, nil never matches.
    assert!(holds(
        r#"IsMatch(attributes["http.status_code"], "^5\\d\\d$")"#
    ));
    assert!(!holds(r#"IsMatch(attributes["missing"], ".*")"#));
    assert!(holds(r#"IsString(attributes["http.route"])"#));
    assert!(!holds(r#"IsString(attributes["http.status_code"])"#));
    assert!(holds(r#"IsInt(attributes["http.status_code"])"#));
    assert!(holds(r#"IsDouble(attributes["ratio"])"#));
    assert!(holds(r#"IsBool(attributes["cached"])"#));
    assert!(holds("IsRootSpan()"));
    assert!(holds(r#"Len(name) == 9"#));
    assert!(holds(r#"Int(attributes["count"]) == 42"#));
    assert!(holds(r#"Int(attributes["ratio"]) == 0"#));
    assert!(holds(r#"Int(name) == nil"#));
    assert!(holds(r#"Double(attributes["count"]) == 42.0"#));
    assert!(holds(r#"String(attributes["http.status_code"]) == "503""#));
    assert!(holds(
        r#"Concat([name, attributes["http.status_code"], attributes["missing"]], "|") == "GET /cart|503|<nil>""#
    ));
    assert!(holds(r#"ToLowerCase(name) == "get /cart""#));
    assert!(holds(r#"ToUpperCase(attributes["http.route"]) == "/CART""#));
    assert!(holds(r#"HasPrefix(name, "GET ")"#));
    assert!(holds(r#"HasSuffix(attributes["http.route"], "art")"#));
}

#[test]
fn spanevent_conditions_see_each_event() {
    assert!(event_holds(r#"name == "exception""#));
    assert!(event_holds(
        r#"attributes["exception.type"] == "java.io.IOException""#
    ));
    assert!(event_holds(
        r#"IsMatch(attributes["exception.message"], "reset")"#
    ));
    assert!(event_holds(
        r#"span.name == "GET /cart" and name == "exception""#
    ));
    assert!(event_holds(
        r#"resource.attributes["service.name"] == "checkout""#
    ));
    assert!(!event_holds(r#"name == "retry""#));
    // A span without events never matches event conditions.
    let c = compile(&[], &[r#"name == "exception""#], ErrorMode::Propagate).unwrap();
    let ok = SpanSpec::new([7; 16], [1; 8]).service("checkout");
    let m = otlp_request(&[ok]).encode_to_vec();
    assert!(!eval_bytes(&c, m, EncodingSetting::OtlpProto).unwrap());
}

#[test]
fn conditions_of_a_list_are_ored() {
    assert!(
        eval_with(
            &[r#"name == "x""#, "kind == SPAN_KIND_SERVER"],
            &[],
            ErrorMode::Propagate
        )
        .unwrap()
    );
    assert!(
        !eval_with(
            &[r#"name == "x""#, r#"name == "y""#],
            &[],
            ErrorMode::Propagate
        )
        .unwrap()
    );
    assert!(
        eval_with(
            &[r#"name == "x""#],
            &[r#"name == "exception""#],
            ErrorMode::Propagate
        )
        .unwrap()
    );
}

#[test]
fn error_modes() {
    // ToLowerCase of an int is a type error, as upstream.
    let failing = r#"ToLowerCase(attributes["http.status_code"]) == "x""#;
    let e = eval_with(&[failing, "true"], &[], ErrorMode::Propagate).unwrap_err();
    assert_eq!(e.to_string(), "ToLowerCase: expected string but got int64");
    // ignore / silent: the failing condition is false, the next one counts.
    assert!(eval_with(&[failing, "true"], &[], ErrorMode::Ignore).unwrap());
    assert!(!eval_with(&[failing], &[], ErrorMode::Silent).unwrap());
    // Other runtime errors.
    for (cond, msg) in [
        (
            r#"Len(attributes["missing"]) == 0"#,
            "Len: unsupported type nil",
        ),
        ("1 / 0 == 1", "attempted to divide by 0"),
        (
            r#"attributes["missing"] + 1 == 1"#,
            "math needs int64 or float64 operands, got nil",
        ),
        (
            r#"Double(name) == 1.0"#,
            "Double: cannot parse \"GET /cart\" as a float",
        ),
        (
            r#"HasPrefix(attributes["missing"], "x")"#,
            "expected string but got nil",
        ),
    ] {
        let e = eval_with(&[cond], &[], ErrorMode::Propagate).unwrap_err();
        assert_eq!(e.to_string(), msg, "{cond}");
    }
    // Short-circuit: the failing side is never reached.
    assert!(holds(r#"true or Len(attributes["missing"]) == 0"#));
}

#[test]
fn unsupported_constructs_are_named() {
    for (cond, msg) in [
        ("links == nil", "not supported by tailsift: path `links`"),
        (
            "span_id.string == \"x\"",
            "not supported by tailsift: path `span_id.string`",
        ),
        (
            r#"attributes["a"]["b"] == 1"#,
            "path `attributes[\"a\"][\"b\"]`",
        ),
        (
            r#"SHA256(name) == "x""#,
            "not supported by tailsift: function `SHA256`",
        ),
        (
            "kind == SPAN_KIND_BOGUS",
            "not supported by tailsift: enum `SPAN_KIND_BOGUS`",
        ),
        (
            r#"IsMatch(name, attributes["p"])"#,
            "`IsMatch` with a pattern that is not a string literal",
        ),
        (r#"IsMatch(name, "(")"#, "`IsMatch`: invalid regex"),
        ("Len(name)", "`Len` does not return a boolean"),
        (r#"attributes["x"]"#, "a condition must be a comparison"),
        ("IsString(name, name)", "`IsString` takes 1 argument, got 2"),
        (
            r#"Concat(name, "-") == "x""#,
            "`Concat` takes a list `[...]` first",
        ),
        (
            "(name == \"a\") == true",
            "a comparison operand cannot be a boolean expression",
        ),
        ("name == [1, 2]", "a list outside `Concat`'s first argument"),
        ("set(name, \"x\")", "function `set`"),
    ] {
        let e = compile_error(cond);
        assert!(e.contains(msg), "{cond}: {e}");
        assert!(e.starts_with(&format!("span[0] `{cond}`: ")), "{e}");
    }
    // IsRootSpan is a span function, not a span event one.
    let e = compile(&[], &["IsRootSpan()"], ErrorMode::Propagate)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("spanevent[0]") && e.contains("function `IsRootSpan`"),
        "{e}"
    );
    assert_eq!(
        compile(&[], &[], ErrorMode::Propagate).err().unwrap(),
        OttlError::Empty
    );
}

#[test]
fn needs_name_exactly_what_is_read() {
    let c = compile(
        &[r#"attributes["a"] == 1 or resource.attributes["b"] == 2"#],
        &[r#"attributes["c"] == nil"#],
        ErrorMode::Propagate,
    )
    .unwrap();
    let keys: Vec<&str> = c.attribute_keys().collect();
    assert_eq!(keys, ["a", "b"]);
    assert!(c.extras().events && !c.extras().scope_name);
    assert_eq!(&*c.extras().event_keys, &["c".into()] as &[Box<str>]);
    let c = compile(
        &[r#"instrumentation_scope.name == "x""#],
        &[],
        ErrorMode::Propagate,
    )
    .unwrap();
    assert!(c.extras().scope_name && !c.extras().events);
}

#[test]
fn jaeger_logs_are_span_events() {
    let c = compile(
        &[],
        &[r#"name == "error" and attributes["message"] == "connection reset""#],
        ErrorMode::Propagate,
    )
    .unwrap();
    assert!(eval_bytes(&c, jaeger_proto(&spec()), EncodingSetting::JaegerProto).unwrap());
    let ok = SpanSpec::new([7; 16], [1; 8]).service("checkout");
    assert!(!eval_bytes(&c, jaeger_proto(&ok), EncodingSetting::JaegerProto).unwrap());
}

#[test]
fn jaeger_spans_expose_name_kind_and_status_message() {
    let c = compile(
        &[r#"name == "GET /cart" and kind == SPAN_KIND_SERVER and status.code == STATUS_CODE_ERROR and attributes["http.route"] == "/cart""#],
        &[],
        ErrorMode::Propagate,
    )
    .unwrap();
    assert!(eval_bytes(&c, jaeger_proto(&spec()), EncodingSetting::JaegerProto).unwrap());
}
