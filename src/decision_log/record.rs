//! The decision record: what the log says about one decided trace.
//!
//! Key: the 16 trace-ID bytes. Value: a protobuf message, so fields can be
//! added without breaking readers (unknown fields are skipped, missing ones
//! read as their defaults); `version` says which fields a writer knew of.
//! About 30 bytes for a typical decision, 50 with its key.

use std::sync::Arc;

use crate::model::{Decision, DecisionReason, TraceId};

/// The record version this build writes.
pub const VERSION: u32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct DecisionRecord {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(bool, tag = "2")]
    pub keep: bool,
    /// The deciding policy (the first sampling policy of a keep).
    #[prost(string, tag = "3")]
    pub policy: String,
    /// Traces this kept one stands for; 0 for drops.
    #[prost(double, tag = "4")]
    pub sample_rate: f64,
    /// Why the trace was decided when it was (`DecisionReason::as_str`).
    #[prost(string, tag = "5")]
    pub reason: String,
    /// The input partition and the offsets of the trace's first and last
    /// messages, to find a trace back in the input topic.
    #[prost(int32, tag = "6")]
    pub input_partition: i32,
    #[prost(int64, tag = "7")]
    pub first_offset: i64,
    #[prost(int64, tag = "8")]
    pub last_offset: i64,
}

impl DecisionRecord {
    pub fn new(
        decision: &Decision,
        reason: DecisionReason,
        input_partition: i32,
        offsets: (i64, i64),
    ) -> Self {
        Self {
            version: VERSION,
            keep: decision.keep,
            policy: decision.policy.to_string(),
            sample_rate: decision.sample_rate,
            reason: reason.as_str().to_string(),
            input_partition,
            first_offset: offsets.0,
            last_offset: offsets.1,
        }
    }

    pub fn decision(&self) -> Decision {
        let policy: Arc<str> = self.policy.as_str().into();
        match self.keep {
            true => Decision::keep(policy, self.sample_rate),
            false => Decision::drop(policy),
        }
    }
}

/// The record key of a trace.
pub fn key(id: &TraceId) -> [u8; 16] {
    id.0
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn round_trips_and_is_small() {
        let d = Decision::keep("errors".into(), 1.0);
        let r = DecisionRecord::new(&d, DecisionReason::Root, 3, (1_000_000, 1_000_007));
        let bytes = r.encode_to_vec();
        assert!(bytes.len() <= 40, "{} bytes", bytes.len());
        let back = DecisionRecord::decode(&bytes[..]).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.decision(), d);
        let dropped = DecisionRecord::new(
            &Decision::drop("none".into()),
            DecisionReason::Timeout,
            0,
            (5, 5),
        );
        assert_eq!(
            DecisionRecord::decode(&dropped.encode_to_vec()[..])
                .unwrap()
                .decision(),
            Decision::drop("none".into())
        );
    }

    /// A reader of this version skips fields a later writer adds.
    #[test]
    fn later_fields_are_skipped() {
        let r = DecisionRecord::new(
            &Decision::drop("p".into()),
            DecisionReason::Limit,
            1,
            (2, 3),
        );
        let mut bytes = r.encode_to_vec();
        // Field 15, length-delimited: "xyz".
        bytes.extend_from_slice(&[0x7a, 3, b'x', b'y', b'z']);
        assert_eq!(DecisionRecord::decode(&bytes[..]).unwrap(), r);
    }
}
