//! The listener at work: TCP connections from stations, a writer that stores what they send
//! in group commits, and a pusher that empties the outbox into the hub.
//!
//! Promise: a data packet is answered (CN 9014, when its `Flag` asks) only after
//! [`ListenerStore::persist`] committed it; a packet that could not be stored is not answered,
//! so the station sends it again. No bad frame or bad packet closes a connection: it is counted
//! and logged and the stream goes on. A connection is closed when it was silent for
//! `idle_timeout`, when a frame it began is not whole after `frame_timeout` (a client trickling
//! bytes), or when it would exceed `max_connections` (then at once, before reading a byte).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use leadbridge_hj212::{Command, Field, Frame, Packet};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

use super::config::ListenerConfig;
use super::framing::{Deframer, Framed};
use super::store::{Answer, HourlyReading, Incoming, ListenerStore, Stored, Waiting};
use crate::connectors::hub::{batch_body, HubClient, Outcome};

/// What the listener has seen since it started, for logs, tests and the benchmark.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub refused_over_cap: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_slow: AtomicU64,
    pub frames: AtomicU64,
    pub bad_frames: AtomicU64,
    pub bad_packets: AtomicU64,
    pub unknown_mn: AtomicU64,
    pub wrong_password: AtomicU64,
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub store_failures: AtomicU64,
    pub answers: AtomicU64,
    pub revisions: AtomicU64,
    pub refused_locally: AtomicU64,
    pub pushed: AtomicU64,
    pub rejected_by_hub: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A running listener.
pub struct Listener {
    pub address: SocketAddr,
    pub counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    store: ListenerStore,
}

/// A packet on its way to the writer, and where the writer says what became of it.
type Job = (Incoming, oneshot::Sender<Result<Stored, String>>);

/// Packets stored in one transaction at most.
const GROUP_COMMIT: usize = 256;
/// Lead revisions sent in one batch call.
const PUSH_BATCH: i64 = 100;

impl Listener {
    /// Binds `config.listen` and starts accepting; `hub` is where leads go (`None` keeps them
    /// in the outbox).
    pub async fn start(
        config: ListenerConfig,
        store: ListenerStore,
        hub: Option<HubClient>,
    ) -> std::io::Result<Listener> {
        let socket = TcpListener::bind(config.listen).await?;
        let address = socket.local_addr()?;
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let (jobs, queue) = mpsc::channel::<Job>(4 * GROUP_COMMIT);
        let outbox_grew = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        tasks.spawn(write(
            config.clone(),
            store.clone(),
            queue,
            counters.clone(),
            outbox_grew.clone(),
        ));
        if let Some(hub) = hub {
            tasks.spawn(push(
                store.clone(),
                hub,
                counters.clone(),
                outbox_grew,
                stopped.clone(),
            ));
        }
        tasks.spawn(accept(socket, config, jobs, counters.clone(), stopped));
        tracing::info!(%address, "HJ 212 listener accepting connections");
        Ok(Listener {
            address,
            counters,
            stop,
            tasks,
            store,
        })
    }

    /// Stops accepting, closes the connections, lets the writer store what it holds and the
    /// pusher finish its batch.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.store.close().await;
    }

    pub fn store(&self) -> &ListenerStore {
        &self.store
    }
}

async fn accept(
    socket: TcpListener,
    config: Arc<ListenerConfig>,
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "accept failed");
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            Counters::add(&counters.refused_over_cap);
            tracing::warn!(%peer, cap = config.max_connections, "connection refused: at the connection cap");
            drop(stream);
            continue;
        };
        Counters::add(&counters.connections);
        let connection = Connection {
            config: config.clone(),
            jobs: jobs.clone(),
            counters: counters.clone(),
            peer,
        };
        let stopped = stopped.clone();
        connections.spawn(async move {
            connection.serve(stream, stopped).await;
            drop(slot);
        });
    }
    drop(jobs);
    while connections.join_next().await.is_some() {}
}

struct Connection {
    config: Arc<ListenerConfig>,
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    peer: SocketAddr,
}

impl Connection {
    async fn serve(&self, mut stream: TcpStream, mut stopped: watch::Receiver<bool>) {
        let peer = self.peer;
        let mut deframer = Deframer::new(self.config.max_packet_bytes);
        let mut buffer = vec![0u8; 4096];
        let mut frame_began: Option<Instant> = None;
        let mut answering = true;
        loop {
            let now = Instant::now();
            let (deadline, slow) = match frame_began {
                Some(began) => (
                    (began + self.config.frame_timeout).min(now + self.config.idle_timeout),
                    true,
                ),
                None => (now + self.config.idle_timeout, false),
            };
            let read = tokio::select! {
                read = stream.read(&mut buffer) => read,
                _ = tokio::time::sleep_until(deadline) => {
                    if slow && frame_began.is_some_and(|began| began + self.config.frame_timeout <= Instant::now()) {
                        Counters::add(&self.counters.closed_slow);
                        tracing::warn!(%peer, "closing: a frame begun {}s ago is still not whole", self.config.frame_timeout.as_secs());
                    } else {
                        Counters::add(&self.counters.closed_idle);
                        tracing::info!(%peer, "closing: silent for {}s", self.config.idle_timeout.as_secs());
                    }
                    break;
                }
                _ = stopped.changed() => break,
            };
            let count = match read {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) => {
                    tracing::info!(%peer, %error, "connection lost");
                    break;
                }
            };
            deframer.push(&buffer[..count]);
            while let Some(item) = deframer.next_framed() {
                frame_began = None;
                match item {
                    Framed::Bad { reason, skipped } => {
                        Counters::add(&self.counters.bad_frames);
                        tracing::warn!(%peer, skipped, "bad frame: {reason}");
                    }
                    Framed::Frame { frame, raw } => {
                        Counters::add(&self.counters.frames);
                        let answer = self.handle(frame, raw).await;
                        if let (Some(answer), true) = (answer, answering) {
                            let written = tokio::time::timeout(
                                self.config.idle_timeout,
                                stream.write_all(&answer),
                            )
                            .await
                            .unwrap_or_else(|_| {
                                Err(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "the peer reads no answers",
                                ))
                            });
                            match written {
                                Ok(()) => Counters::add(&self.counters.answers),
                                Err(error) => {
                                    // The frames already received are still stored; the
                                    // station, missing their answers, sends them again.
                                    tracing::info!(%peer, %error, "cannot answer; the peer is gone");
                                    answering = false;
                                }
                            }
                        }
                    }
                }
            }
            if deframer.in_frame() {
                frame_began.get_or_insert_with(Instant::now);
            } else {
                // A frame given up with no `##` behind it yet is not a frame being received.
                frame_began = None;
            }
        }
        // However the connection ends, what it left in the buffer is reported.
        if let Some(Framed::Bad { reason, skipped }) = deframer.finish() {
            Counters::add(&self.counters.bad_frames);
            tracing::warn!(%peer, skipped, "bad frame: {reason}");
        }
    }

    /// Checks, stores and answers one frame.
    async fn handle(&self, frame: Frame, raw: Vec<u8>) -> Option<Vec<u8>> {
        let peer = self.peer;
        // Printable ASCII only (the frame checked ASCII): a control character in a packet is
        // no reading, and the store's text columns refuse NUL.
        if let Some(at) = frame.data().bytes().position(|b| b.is_ascii_control()) {
            Counters::add(&self.counters.bad_packets);
            tracing::warn!(%peer, offset = at, "packet refused: a control character in its data segment");
            return None;
        }
        let packet = match frame.packet() {
            Ok(packet) => packet,
            Err(error) => {
                Counters::add(&self.counters.bad_packets);
                tracing::warn!(%peer, %error, "packet refused");
                return None;
            }
        };
        let Some(station) = self.config.stations.get(&packet.mn) else {
            Counters::add(&self.counters.unknown_mn);
            tracing::warn!(%peer, mn = %packet.mn, "packet from an unregistered MN");
            return Some(request_response(&packet, 4, self.config.max_packet_bytes));
        };
        if packet.pw != station.password {
            Counters::add(&self.counters.wrong_password);
            tracing::warn!(%peer, mn = %packet.mn, "packet with a wrong PW");
            return Some(request_response(&packet, 3, self.config.max_packet_bytes));
        }
        let wants_answer = packet.flag.is_some_and(|flag| flag.ack_required());
        // Every packet of a registered station is kept as evidence, keyed by its DataTime, or
        // for a packet without one (a status or notice) by its QN, which a retry repeats.
        let Some(data_time) = packet
            .cp
            .data_time
            .as_ref()
            .or(packet.qn.as_ref())
            .and_then(naive)
        else {
            Counters::add(&self.counters.bad_packets);
            tracing::warn!(%peer, mn = %packet.mn, cn = packet.cn.code(), "packet with neither DataTime nor QN: it cannot be kept apart from the next; not stored, not answered");
            return None;
        };
        let hourly = if packet.cn == Command::HourlyData {
            packet
                .cp
                .pollutants
                .iter()
                .map(|pollutant| HourlyReading {
                    pollutant: pollutant.code.clone(),
                    avg: pollutant
                        .get(Field::Avg)
                        .map(|number| (number.text().to_owned(), number.value())),
                    flag: pollutant.flag.as_ref().map(|flag| flag.as_str().to_owned()),
                })
                .collect()
        } else {
            Vec::new()
        };
        let incoming = Incoming {
            sha256: hex::encode(Sha256::digest(&raw)),
            raw,
            mn: packet.mn.clone(),
            cn: packet.cn.code(),
            data_time,
            part: packet.split.map_or(0, |split| split.number),
            qn: packet.qn.as_ref().map(|qn| qn.to_qn()),
            peer: peer.to_string(),
            received_at: Utc::now(),
            hourly,
        };
        let (done, outcome) = oneshot::channel();
        if self.jobs.send((incoming, done)).await.is_err() {
            return None;
        }
        match outcome.await {
            Ok(Ok(stored)) => {
                tracing::debug!(%peer, mn = %packet.mn, ?stored, "packet stored");
                wants_answer.then(|| data_response(&packet, self.config.max_packet_bytes))
            }
            Ok(Err(error)) => {
                tracing::error!(%peer, mn = %packet.mn, %error, "packet not stored; not answered, so the station sends it again");
                None
            }
            Err(_) => None,
        }
    }
}

fn naive(time: &leadbridge_hj212::DateTime) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDate::from_ymd_opt(
        i32::from(time.year),
        u32::from(time.month),
        u32::from(time.day),
    )?
    .and_hms_opt(
        u32::from(time.hour),
        u32::from(time.minute),
        u32::from(time.second),
    )
}

/// The header an answer repeats from the packet it answers (ST 91: system interaction).
fn answer_header(packet: &Packet, cn: u16) -> String {
    let qn = packet
        .qn
        .as_ref()
        .map(|qn| format!("QN={};", qn.to_qn()))
        .unwrap_or_default();
    format!(
        "{qn}ST=91;CN={cn};PW={};MN={};Flag=4;",
        packet.pw, packet.mn
    )
}

/// CN 9014, the data response.
fn data_response(packet: &Packet, max: usize) -> Vec<u8> {
    encode(&format!("{}CP=&&&&", answer_header(packet, 9014)), max)
}

/// CN 9011 with `QnRtn` (3: wrong PW, 4: wrong MN).
fn request_response(packet: &Packet, qn_rtn: u8, max: usize) -> Vec<u8> {
    encode(
        &format!("{}CP=&&QnRtn={qn_rtn}&&", answer_header(packet, 9011)),
        max,
    )
}

fn encode(data: &str, max: usize) -> Vec<u8> {
    // The packet answered fitted `max`, and an answer is shorter than any data packet.
    Frame::encode_with_max_len(data, max.max(data.len() + leadbridge_hj212::FRAME_OVERHEAD))
        .unwrap_or_default()
}

/// The writer: stores what the connections hand over, as many packets per commit as are
/// waiting, and says to each connection what became of its packet.
async fn write(
    config: Arc<ListenerConfig>,
    store: ListenerStore,
    mut queue: mpsc::Receiver<Job>,
    counters: Arc<Counters>,
    outbox_grew: Arc<Notify>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(GROUP_COMMIT);
    while queue.recv_many(&mut jobs, GROUP_COMMIT).await > 0 {
        let batch: Vec<Incoming> = jobs.iter().map(|(incoming, _)| incoming.clone()).collect();
        let mut persisted = store.persist(&config, &batch).await;
        if persisted.is_err() && batch.len() > 1 {
            // One packet must not sink the others: store them one by one.
            let mut stored = Vec::with_capacity(batch.len());
            let mut revised = Vec::new();
            let mut failed = None;
            for one in &batch {
                match store.persist(&config, std::slice::from_ref(one)).await {
                    Ok((mut s, mut r)) => {
                        stored.append(&mut s);
                        revised.append(&mut r);
                    }
                    Err(error) => {
                        failed.get_or_insert(error.to_string());
                        stored.push(Stored::Failed);
                    }
                }
            }
            if let Some(error) = failed {
                tracing::error!(%error, "a packet of the group could not be stored; the others were");
            }
            persisted = Ok((stored, revised));
        }
        match persisted {
            Ok((stored, revised)) => {
                for ((_, done), stored) in jobs.drain(..).zip(stored) {
                    let _ = done.send(match stored {
                        Stored::New => {
                            Counters::add(&counters.stored);
                            Ok(stored)
                        }
                        Stored::Duplicate => {
                            Counters::add(&counters.duplicates);
                            Ok(stored)
                        }
                        Stored::Failed => {
                            Counters::add(&counters.store_failures);
                            Err("the packet could not be stored".to_owned())
                        }
                    });
                }
                for revision in &revised {
                    Counters::add(&counters.revisions);
                    match &revision.refused {
                        None => {
                            tracing::info!(case_id = %revision.case_id, revision = revision.revision, "lead revision queued for the hub")
                        }
                        Some(problems) => {
                            Counters::add(&counters.refused_locally);
                            tracing::error!(case_id = %revision.case_id, revision = revision.revision, %problems, "lead revision fails the hub's checks; kept, not sent");
                        }
                    }
                }
                if !revised.is_empty() {
                    outbox_grew.notify_one();
                }
            }
            Err(error) => {
                let message = error.to_string();
                for (_, done) in jobs.drain(..) {
                    Counters::add(&counters.store_failures);
                    let _ = done.send(Err(message.clone()));
                }
            }
        }
    }
}

/// The pusher: sends waiting lead revisions to the hub, oldest first; on failure waits and
/// tries again, for as long as the listener runs.
async fn push(
    store: ListenerStore,
    hub: HubClient,
    counters: Arc<Counters>,
    outbox_grew: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(500);
    loop {
        if *stopped.borrow() {
            return;
        }
        let waiting = match store.waiting(PUSH_BATCH).await {
            Ok(waiting) => waiting,
            Err(error) => {
                tracing::error!(%error, "cannot read the outbox");
                Vec::new()
            }
        };
        if waiting.is_empty() {
            tokio::select! {
                _ = outbox_grew.notified() => {}
                _ = sleep(Duration::from_secs(5)) => {}
                _ = stopped.changed() => return,
            }
            continue;
        }
        let leads: Vec<serde_json::Value> = waiting.iter().map(|row| row.lead.clone()).collect();
        match hub.submit(batch_body(&leads), leads.len()).await {
            Ok(outcomes) => {
                // A refusal of the caller (a certificate the hub does not take for the
                // environment bureau) is no answer about the lead: the revisions stay queued
                // until the certificate is fixed.
                let refused_caller = outcomes.iter().any(|outcome| {
                    matches!(outcome, Outcome::Rejected(problems) if problems.iter().any(|p| p.code == "forbidden"))
                });
                if refused_caller {
                    tracing::error!("the hub refuses this listener's certificate for the environment bureau's leads; they stay in the outbox");
                    tokio::select! {
                        _ = sleep(pause) => {}
                        _ = stopped.changed() => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(60));
                    continue;
                }
                pause = Duration::from_millis(500);
                let answers: Vec<(Waiting, Answer)> = waiting
                    .into_iter()
                    .zip(outcomes)
                    .map(|(row, outcome)| {
                        Counters::add(&counters.pushed);
                        let answer = match outcome {
                            Outcome::Accepted => Answer::Accepted,
                            Outcome::Replayed => Answer::Replayed,
                            Outcome::Rejected(problems) => {
                                Counters::add(&counters.rejected_by_hub);
                                let conflict = problems.iter().any(|p| p.code == "conflict");
                                let problems: serde_json::Value = problems
                                    .iter()
                                    .map(|p| serde_json::json!({"pointer": p.pointer, "code": p.code, "message": p.message}))
                                    .collect();
                                tracing::error!(case_id = %row.case_id, revision = row.revision, %problems, "the hub rejected a lead revision");
                                if conflict {
                                    Answer::Conflict(problems)
                                } else {
                                    Answer::Rejected(problems)
                                }
                            }
                        };
                        (row, answer)
                    })
                    .collect();
                if let Err(error) = store.answered(&answers).await {
                    // Sent again next round and answered as replays.
                    tracing::error!(%error, "cannot record the hub's answers");
                }
            }
            Err(error) => {
                tracing::warn!(%error, waiting = leads.len(), "the hub did not take the lead revisions; they stay in the outbox");
                tokio::select! {
                    _ = sleep(pause) => {}
                    _ = stopped.changed() => return,
                }
                pause = (pause * 2).min(Duration::from_secs(60));
            }
        }
    }
}
