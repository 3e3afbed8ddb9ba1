//! Canned replies as Elasticsearch 8 writes them.

use super::*;

fn reply(status: u16, body: &str) -> Option<Reply<'_>> {
    Some(Reply {
        status,
        body: body.as_bytes(),
    })
}

/// A bulk reply with `errors: true` and one item per (status, error) pair.
fn bulk(items: &[(u16, &str)]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|(status, error)| match error.is_empty() {
            true => format!(
                r#"{{"index":{{"_index":"i","_id":"x","status":{status},"result":"created"}}}}"#
            ),
            false => format!(
                r#"{{"index":{{"_index":"i","_id":"x","status":{status},"error":{error}}}}}"#
            ),
        })
        .collect();
    format!(
        r#"{{"took":3,"errors":true,"items":[{}]}}"#,
        items.join(",")
    )
}

fn one_item(status: u16, error: &str) -> Action {
    match classify(reply(200, &bulk(&[(status, error)])), 1) {
        Verdict::Items(mut a) if a.len() == 1 => a.remove(0),
        v => panic!("{v:?}"),
    }
}

fn retried(status: u16, error: &str) -> Reason {
    match one_item(status, error) {
        Action::Retry(r) => r,
        a => panic!("{a:?}"),
    }
}

#[test]
fn no_reply_is_a_connection_error() {
    assert_eq!(classify(None, 3), Verdict::Retry(Reason::Connection));
}

#[test]
fn a_clean_reply_acknowledges_everything() {
    let body = r#"{"took":2,"errors":false,"items":[{"index":{"_index":"i","_id":"a","status":201,"result":"created"}}]}"#;
    assert_eq!(classify(reply(200, body), 1), Verdict::Acknowledge);
}

#[test]
fn document_errors_are_dead_lettered() {
    let parsing = r#"{"type":"document_parsing_exception","reason":"[1:30] failed to parse field [startTime] of type [long] in document with id 'x'. Preview of field's value: 'soon'","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"soon\""}}"#;
    let mapper = r#"{"type":"mapper_parsing_exception","reason":"failed to parse"}"#;
    let value = r#"{"type":"illegal_argument_exception","reason":"Limit of total fields [1000] has been exceeded while adding new fields [1]"}"#;
    let strict = r#"{"type":"strict_dynamic_mapping_exception","reason":"[1:2] mapping set to strict, dynamic introduction of [x] within [_doc] is not allowed"}"#;
    for (status, error) in [(400, parsing), (400, mapper), (400, value), (400, strict)] {
        match one_item(status, error) {
            Action::DeadLetter { kind, error } => {
                assert!(error.starts_with(&kind), "{error}");
            }
            a => panic!("{error}: {a:?}"),
        }
    }
    // The cause is part of the dead letter's text.
    let Action::DeadLetter { error, .. } = one_item(400, parsing) else {
        unreachable!()
    };
    assert!(error.contains("For input string"), "{error}");
}

#[test]
fn cluster_errors_are_retried_by_reason() {
    let cases = [
        (
            403,
            r#"{"type":"cluster_block_exception","reason":"index [p-jaeger-span-2026-12-02] blocked by: [FORBIDDEN/8/index write (api)];"}"#,
            Reason::WriteBlock,
        ),
        (
            429,
            r#"{"type":"cluster_block_exception","reason":"index [i] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];"}"#,
            Reason::WriteBlock,
        ),
        (
            403,
            r#"{"type":"security_exception","reason":"action [indices:admin/auto_create] is unauthorized for user [tailsift] with effective roles [writer] on indices [jaeger-span-2026-12-03], this action is granted by the index privileges [auto_configure,create_index,manage,all]"}"#,
            Reason::Forbidden,
        ),
        (
            404,
            r#"{"type":"index_not_found_exception","reason":"no such index [p-jaeger-span-2026-12-03] and [action.auto_create_index] ([-p*,+*]) doesn't match","index":"p-jaeger-span-2026-12-03"}"#,
            Reason::IndexMissing,
        ),
        (
            400,
            r#"{"type":"validation_exception","reason":"Validation Failed: 1: this action would add [1] shards, but this cluster currently has [3]/[3] maximum normal shards open; for more information, see https://www.elastic.co/guide/en/elasticsearch/reference/8.19/size-your-shards.html#troubleshooting-max-shards-open;"}"#,
            Reason::ShardLimit,
        ),
        (
            400,
            r#"{"type":"resource_already_exists_exception","reason":"index [p-jaeger-span-2026-12-03/abc] already exists","index":"p-jaeger-span-2026-12-03"}"#,
            Reason::IndexCreation,
        ),
        (
            400,
            r#"{"type":"illegal_argument_exception","reason":"no write index is defined for alias [jaeger-span-write]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index"}"#,
            Reason::Alias,
        ),
        (
            400,
            r#"{"type":"index_closed_exception","reason":"closed","index":"i"}"#,
            Reason::IndexClosed,
        ),
        (
            429,
            r#"{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"}"#,
            Reason::Overloaded,
        ),
        (
            429,
            r#"{"type":"circuit_breaking_exception","reason":"[parent] Data too large"}"#,
            Reason::Overloaded,
        ),
        (
            503,
            r#"{"type":"unavailable_shards_exception","reason":"[i][0] primary shard is not active"}"#,
            Reason::ServerError,
        ),
        (
            400,
            r#"{"type":"some_new_exception","reason":"?"}"#,
            Reason::Unclassified,
        ),
        (404, r#"{"type":"","reason":""}"#, Reason::IndexMissing),
    ];
    for (status, error, reason) in cases {
        assert_eq!(retried(status, error), reason, "{error}");
    }
}

#[test]
fn items_keep_their_order_and_mix() {
    let body = bulk(&[
        (201, ""),
        (
            400,
            r#"{"type":"mapper_parsing_exception","reason":"failed to parse"}"#,
        ),
        (
            403,
            r#"{"type":"cluster_block_exception","reason":"blocked by: [FORBIDDEN/8/index write (api)];"}"#,
        ),
    ]);
    let Verdict::Items(actions) = classify(reply(200, &body), 3) else {
        panic!()
    };
    assert_eq!(actions[0], Action::Acknowledge);
    assert!(matches!(actions[1], Action::DeadLetter { .. }));
    assert_eq!(actions[2], Action::Retry(Reason::WriteBlock));
}

#[test]
fn unreadable_or_mismatched_replies_are_retried() {
    assert_eq!(
        classify(reply(200, "<html>proxy</html>"), 1),
        Verdict::Retry(Reason::Unreadable)
    );
    let two = bulk(&[(201, ""), (201, "")]);
    assert_eq!(
        classify(reply(200, &two), 3),
        Verdict::Retry(Reason::Unreadable)
    );
}

#[test]
fn refused_requests_by_cause() {
    let security = r#"{"error":{"root_cause":[],"type":"security_exception","reason":"action [indices:data/write/bulk] is unauthorized for user [x]"},"status":403}"#;
    assert_eq!(
        classify(reply(403, security), 5),
        Verdict::Retry(Reason::Forbidden)
    );
    let auth = r#"{"error":{"type":"security_exception","reason":"unable to authenticate user [x] for REST request [/_bulk]"},"status":401}"#;
    assert_eq!(
        classify(reply(401, auth), 5),
        Verdict::Retry(Reason::Unauthorized)
    );
    assert_eq!(
        classify(reply(401, ""), 5),
        Verdict::Retry(Reason::Unauthorized)
    );
    assert_eq!(
        classify(reply(429, "Too Many Requests"), 5),
        Verdict::Retry(Reason::Overloaded)
    );
    assert_eq!(
        classify(reply(502, "Bad Gateway"), 5),
        Verdict::Retry(Reason::ServerError)
    );
    let missing = r#"{"error":{"type":"index_not_found_exception","reason":"no such index [jaeger-span-write]"},"status":404}"#;
    assert_eq!(
        classify(reply(404, missing), 2),
        Verdict::Retry(Reason::IndexMissing)
    );
}

#[test]
fn a_body_refused_for_its_content_is_split_to_the_culprit() {
    let unparsable = r#"{"error":{"type":"x_content_parse_exception","reason":"[1:10] Unexpected character"},"status":400}"#;
    assert_eq!(classify(reply(400, unparsable), 4), Verdict::Split);
    assert_eq!(classify(reply(413, ""), 4), Verdict::Split);
    let Verdict::Items(one) = classify(reply(413, ""), 1) else {
        panic!()
    };
    assert!(
        matches!(&one[0], Action::DeadLetter { kind, error } if kind == "http_413" && error.starts_with("http 413")),
        "{one:?}"
    );
    // A 400 about the cluster, not the body, is retried whole.
    let shards = r#"{"error":{"type":"validation_exception","reason":"Validation Failed: 1: this action would add [2] shards, but this cluster currently has [1]/[1] maximum normal shards open;"},"status":400}"#;
    assert_eq!(
        classify(reply(400, shards), 4),
        Verdict::Retry(Reason::ShardLimit)
    );
}
