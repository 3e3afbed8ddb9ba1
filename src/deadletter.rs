//! The dead-letter topic: bad input and documents Elasticsearch permanently
//! rejects are forwarded there with headers naming the error and the source,
//! then resolved so they never hold back a watermark.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::budget::ByteBudget;
use crate::offsets::AckHandle;

/// One message set aside.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub payload: Bytes,
    pub key: Option<Bytes>,
    /// A short machine-readable reason, also the metric label.
    pub reason: &'static str,
    /// The full error text.
    pub error: String,
    pub partition: i32,
    pub offset: i64,
}

/// What [`DeadLetterSink::send`] returns: resolves once the letter is
/// taken in (not stored).
pub type Queued<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where dead letters go. `send` waits while the letters in flight fill
/// their budget (the producing partition waits with it: backpressure);
/// `ack` is acknowledged once the letter is safely stored (or counted, when
/// no topic is configured), so the source message is resolved only then.
pub trait DeadLetterSink: Send + Sync {
    fn send(&self, letter: DeadLetter, ack: AckHandle) -> Queued<'_>;
}

/// Dead letters that go nowhere but the metric (no topic configured).
pub struct CountOnly;

impl DeadLetterSink for CountOnly {
    fn send(&self, letter: DeadLetter, ack: AckHandle) -> Queued<'_> {
        metrics::counter!("tailsift_dead_letters_total", "reason" => letter.reason, "outcome" => "not_configured")
            .increment(1);
        ack.ack();
        Box::pin(std::future::ready(()))
    }
}

/// Creates `topic` with the broker's default partitions and replication,
/// taking messages of up to `max_message_bytes`, unless it exists (an
/// existing topic keeps its settings). Failing here stops the start:
/// producing to a missing topic would hold every dead letter (and its
/// source offset) until an operator creates it.
pub async fn ensure_topic(
    client: &ClientConfig,
    topic: &str,
    max_message_bytes: u64,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let max = max_message_bytes.to_string();
    // -1: the broker's `num.partitions` and `default.replication.factor`.
    let new = NewTopic::new(topic, -1, TopicReplication::Fixed(-1)).set("max.message.bytes", &max);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&new], &opts).await? {
        match result {
            Ok(_) => tracing::info!(topic, "created the dead-letter topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// Produces dead letters to a Kafka topic.
#[derive(Clone)]
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: Arc<str>,
    source_topic: Arc<str>,
    /// Payload bytes of letters not yet stored: a broker that refuses them
    /// (a missing topic, an ACL) holds at most this much in memory.
    in_flight: ByteBudget,
}

impl KafkaDeadLetters {
    /// `budget`: the bytes of letters in flight, the memory plan's share.
    pub fn new(
        client: &ClientConfig,
        topic: &str,
        source_topic: &str,
        budget: usize,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            producer: client.create()?,
            topic: topic.into(),
            source_topic: source_topic.into(),
            in_flight: ByteBudget::new(budget),
        })
    }

    fn headers(&self, l: &DeadLetter) -> OwnedHeaders {
        let partition = l.partition.to_string();
        let offset = l.offset.to_string();
        OwnedHeaders::new()
            .insert(Header {
                key: "tailsift.error.reason",
                value: Some(l.reason),
            })
            .insert(Header {
                key: "tailsift.error",
                value: Some(l.error.as_str()),
            })
            .insert(Header {
                key: "tailsift.source.topic",
                value: Some(&*self.source_topic),
            })
            .insert(Header {
                key: "tailsift.source.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "tailsift.source.offset",
                value: Some(offset.as_str()),
            })
    }

    /// Produces and waits for the broker's acknowledgement.
    pub async fn deliver(&self, l: &DeadLetter) -> Result<(), rdkafka::error::KafkaError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(&l.payload[..])
            .headers(self.headers(l));
        if let Some(k) = &l.key {
            record = record.key(&k[..]);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

impl DeadLetterSink for KafkaDeadLetters {
    /// Waits for room in the budget, then delivers in the background,
    /// retrying until the broker takes it: a dead letter is resolved only
    /// once it is stored.
    fn send(&self, letter: DeadLetter, ack: AckHandle) -> Queued<'_> {
        Box::pin(async move {
            let permit = self.in_flight.reserve(letter.payload.len()).await;
            metrics::gauge!("tailsift_dead_letter_bytes").set(self.in_flight.used() as f64);
            let this = self.clone();
            tokio::spawn(async move {
                this.deliver_until_stored(&letter).await;
                drop(permit);
                metrics::gauge!("tailsift_dead_letter_bytes").set(this.in_flight.used() as f64);
                ack.ack();
            });
        })
    }
}

impl KafkaDeadLetters {
    async fn deliver_until_stored(&self, letter: &DeadLetter) {
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = self.deliver(letter).await {
            tracing::warn!(error = %e, reason = letter.reason, "dead-letter produce failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        metrics::counter!("tailsift_dead_letters_total", "reason" => letter.reason, "outcome" => "produced")
            .increment(1);
    }
}
