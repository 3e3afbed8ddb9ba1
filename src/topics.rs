//! The Kafka topics tailsift creates for itself when they are missing:
//! the dead-letter topic and the decision log.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates `topic` unless it exists, with `partitions` (-1: the broker's
/// `num.partitions`), the broker's default replication factor and
/// `configs`. True if this call created it.
pub async fn ensure_topic(
    client: &ClientConfig,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<bool, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let mut created = false;
    for result in admin.create_topics([&new], &opts).await? {
        match result {
            Ok(_) => created = true,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(created)
}
