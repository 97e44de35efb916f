//! The adapter's consumer lag: how many messages of each leads partition the adapter's group
//! has not committed yet, as `police_consumer_lag{topic,partition}` (high watermark minus
//! committed offset).
//!
//! Measured by polling the brokers, not from librdkafka's statistics callback: every
//! `police.lag_poll_interval_ms` a separate client, which never joins the group and never
//! commits, reads the group's committed offsets and each partition's high watermark. So the
//! figure is the brokers' own, the one `kafka-consumer-groups.sh --describe` shows; it covers
//! every partition of the group, not only those assigned to this instance; and it keeps being
//! measured while the adapter's consumer is stuck on one message (its database unavailable),
//! which is exactly when lag matters. Statistics would report only this client's view of its
//! own assignment, and only while its poll loop runs.
//!
//! Limits: the committed offset trails the processed messages by up to
//! `auto.commit.interval.ms` (one second), so the lag reads high by up to a second's worth of
//! messages; a partition the group never committed counts from its low watermark (a new group
//! starts at the earliest message). When the brokers cannot be asked, the last figures stay and
//! a warning is logged. Each measurement costs one metadata request per topic, one offset
//! fetch, and one watermark request per partition.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::shared::config::KafkaSettings;
use crate::shared::kafka::{self, KafkaSetupError};
use crate::shared::telemetry::{events, Metrics};

/// Longest wait for one request to the brokers, so a measurement against unreachable brokers
/// ends soon and does not hold up shutdown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// One partition's lag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub lag: i64,
}

pub struct LagMonitor {
    consumer: Arc<BaseConsumer>,
    topics: Vec<String>,
    interval: Duration,
    metrics: Metrics,
}

impl LagMonitor {
    /// A monitor of `group_id` on `topics`; contacts nobody until it runs.
    pub fn build(
        settings: &KafkaSettings,
        bootstrap_servers: &str,
        group_id: &str,
        topics: Vec<String>,
        interval: Duration,
        metrics: Metrics,
    ) -> Result<LagMonitor, KafkaSetupError> {
        if interval.is_zero() {
            return Err(KafkaSetupError::BadSetting(
                "police.lag_poll_interval_ms must be positive".into(),
            ));
        }
        let consumer: BaseConsumer = kafka::observer_config(settings, bootstrap_servers, group_id)
            .create()
            .map_err(KafkaSetupError::Client)?;
        Ok(LagMonitor {
            consumer: Arc::new(consumer),
            topics,
            interval,
            metrics,
        })
    }

    /// Measures every interval until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => break,
            }
            let consumer = self.consumer.clone();
            let topics = self.topics.clone();
            // librdkafka's offset and watermark queries block their thread.
            let measured = tokio::task::spawn_blocking(move || measure(&consumer, &topics));
            let measured = tokio::select! {
                measured = measured => measured,
                _ = shutdown.changed() => break,
            };
            match measured {
                Ok(Ok(lags)) => {
                    for lag in lags {
                        events::police_consumer_lag(
                            &self.metrics,
                            &lag.topic,
                            lag.partition,
                            lag.lag,
                        );
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "Cannot measure the consumer lag; the last figures stay.")
                }
                Err(error) => {
                    tracing::warn!(%error, "The consumer lag measurement failed; the last figures stay.")
                }
            }
        }
    }
}

/// The lag of every partition of `topics` that the brokers know.
fn measure(consumer: &BaseConsumer, topics: &[String]) -> KafkaResult<Vec<PartitionLag>> {
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        // A topic not created yet has no partitions and so no lag.
        for described in metadata.topics().iter().filter(|t| t.error().is_none()) {
            for partition in described.partitions() {
                partitions.add_partition(described.name(), partition.id());
            }
        }
    }
    let committed = consumer.committed_offsets(partitions, REQUEST_TIMEOUT)?;
    let mut lags = Vec::new();
    for element in committed.elements() {
        let (low, high) =
            consumer.fetch_watermarks(element.topic(), element.partition(), REQUEST_TIMEOUT)?;
        let next = match element.offset() {
            Offset::Offset(offset) => offset,
            // Never committed: the group starts from the earliest message still there.
            _ => low,
        };
        lags.push(PartitionLag {
            topic: element.topic().to_owned(),
            partition: element.partition(),
            lag: (high - next).max(0),
        });
    }
    Ok(lags)
}
