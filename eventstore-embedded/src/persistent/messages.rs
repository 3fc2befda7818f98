//! What a group's task and its consumers say to each other.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::info::GroupInfo;
use super::source::Item;
use super::Dropped;

/// A consumer's number within the server.
pub(crate) type ConsumerId = u64;

/// What a consumer's stream receives.
#[derive(Debug)]
pub(crate) enum Delivery {
    Event { item: Arc<Item>, retry_count: u32 },
    Dropped(Dropped),
}

/// What a consumer said of events it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nack {
    Park,
    Retry,
    Skip,
    Stop,
}

/// A consumer joining, as the gRPC front describes it.
#[derive(Debug)]
pub(crate) struct Joining {
    pub(crate) id: ConsumerId,
    pub(crate) buffer_size: u32,
    pub(crate) from: String,
    pub(crate) username: String,
    pub(crate) tx: mpsc::UnboundedSender<Delivery>,
}

/// The group task's inbox.
#[derive(Debug)]
pub(crate) enum Msg {
    Join(Joining, oneshot::Sender<Result<(), u32>>),
    Leave(ConsumerId),
    Ack(ConsumerId, Vec<Uuid>),
    Nack(ConsumerId, Vec<Uuid>, Nack),
    Info(oneshot::Sender<GroupInfo>),
    ReplayParked(Option<u64>, oneshot::Sender<Result<(), String>>),
    Stop(Dropped, oneshot::Sender<()>),
}
