//! The `Streams` service: appends (unary-stream and batch), deletes, and the
//! entry point of reads and subscriptions (whose loops live in `read.rs`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use super::convert::{self, IdFormat};
use super::read;
use crate::proto::event_store::client::streams::{
    append_req, append_resp, batch_append_req, batch_append_resp, delete_req, delete_resp, streams_server,
    tombstone_req, tombstone_resp, AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp,
    ReadReq, ReadResp, TombstoneReq, TombstoneResp,
};
use crate::proto::event_store::client::AllStreamPosition;
use crate::storage::{CurrentRevision, ExpectedRevision, ProposedEvent, Store, WriteError, WriteResult};

/// Batch appends of one call being processed at once; more wait their turn.
const MAX_BATCHES_IN_FLIGHT: usize = 256;
/// Batches of one call whose chunks are still arriving.
const MAX_OPEN_BATCHES: usize = 1024;

/// Implements `event_store.client.streams.Streams` over a [`Store`].
#[derive(Debug, Clone)]
pub(crate) struct StreamsService {
    pub(crate) store: Arc<Store>,
    pub(crate) max_append_size: usize,
    pub(crate) closing: tokio::sync::watch::Receiver<bool>,
    pub(crate) in_flight: super::InFlight,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl streams_server::Streams for StreamsService {
    type ReadStream = ResponseStream<ReadResp>;
    type BatchAppendStream = ResponseStream<BatchAppendResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Self::ReadStream>, Status> {
        let options = request.into_inner().options.ok_or_else(|| Status::invalid_argument("missing read options"))?;
        let plan = read::Plan::parse(options)?;
        let (tx, mut rx) = mpsc::channel(read::CHANNEL_CAPACITY);
        let guard = self.in_flight.enter();
        let session = read::run(plan, self.store.clone(), tx, self.closing.clone());
        tokio::spawn(async move {
            session.await;
            drop(guard);
        });
        let first = first_batch(&mut rx).await?;
        let rest = ReceiverStream::new(rx).flat_map(futures::stream::iter);
        Ok(Response::new(Box::pin(futures::stream::iter(first).chain(rest))))
    }

    async fn append(&self, request: Request<Streaming<AppendReq>>) -> Result<Response<AppendResp>, Status> {
        let _guard = self.in_flight.enter();
        let mut inbound = request.into_inner();
        let Some(AppendReq { content: Some(append_req::Content::Options(options)) }) = inbound.message().await? else {
            return Err(Status::invalid_argument("the first append message must carry the options"));
        };
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = match options.expected_stream_revision {
            Some(append_req::options::ExpectedStreamRevision::Revision(n)) => ExpectedRevision::Exact(n),
            Some(append_req::options::ExpectedStreamRevision::NoStream(())) => ExpectedRevision::NoStream,
            Some(append_req::options::ExpectedStreamRevision::StreamExists(())) => ExpectedRevision::StreamExists,
            Some(append_req::options::ExpectedStreamRevision::Any(())) | None => ExpectedRevision::Any,
        };
        let mut events = Vec::new();
        let mut size = 0;
        while let Some(message) = inbound.message().await? {
            let Some(append_req::Content::ProposedMessage(m)) = message.content else {
                return Err(Status::invalid_argument("options may only be sent once per append"));
            };
            let event = convert::proposed_event(m.id, m.metadata, m.custom_metadata, m.data)?;
            size += event.size();
            if size > self.max_append_size {
                let error = WriteError::TooLarge { size, max: self.max_append_size };
                return Err(convert::write_error_status(&stream, error));
            }
            events.push(event);
        }
        let result = match self.store.append(&stream, expected, events).await {
            Ok(written) => append_resp::Result::Success(append_success(written)),
            Err(WriteError::WrongExpectedVersion { current, expected }) => {
                append_resp::Result::WrongExpectedVersion(wrong_expected_version(current, expected))
            }
            Err(other) => return Err(convert::write_error_status(&stream, other)),
        };
        Ok(Response::new(AppendResp { result: Some(result) }))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        use delete_req::options::ExpectedStreamRevision as E;
        let _guard = self.in_flight.enter();
        let options = request.into_inner().options.ok_or_else(|| Status::invalid_argument("missing options"))?;
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = match options.expected_stream_revision {
            Some(E::Revision(n)) => ExpectedRevision::Exact(n),
            Some(E::NoStream(())) => ExpectedRevision::NoStream,
            Some(E::StreamExists(())) => ExpectedRevision::StreamExists,
            Some(E::Any(())) | None => ExpectedRevision::Any,
        };
        let written =
            self.store.delete(&stream, expected).await.map_err(|e| convert::write_error_status(&stream, e))?;
        let position_option = Some(match written.position {
            Some(p) => {
                delete_resp::PositionOption::Position(delete_resp::Position { commit_position: p, prepare_position: p })
            }
            None => delete_resp::PositionOption::NoPosition(()),
        });
        Ok(Response::new(DeleteResp { position_option }))
    }

    async fn tombstone(&self, request: Request<TombstoneReq>) -> Result<Response<TombstoneResp>, Status> {
        use tombstone_req::options::ExpectedStreamRevision as E;
        let _guard = self.in_flight.enter();
        let options = request.into_inner().options.ok_or_else(|| Status::invalid_argument("missing options"))?;
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = match options.expected_stream_revision {
            Some(E::Revision(n)) => ExpectedRevision::Exact(n),
            Some(E::NoStream(())) => ExpectedRevision::NoStream,
            Some(E::StreamExists(())) => ExpectedRevision::StreamExists,
            Some(E::Any(())) | None => ExpectedRevision::Any,
        };
        let written =
            self.store.tombstone(&stream, expected).await.map_err(|e| convert::write_error_status(&stream, e))?;
        let position_option = Some(match written.position {
            Some(p) => tombstone_resp::PositionOption::Position(tombstone_resp::Position {
                commit_position: p,
                prepare_position: p,
            }),
            None => tombstone_resp::PositionOption::NoPosition(()),
        });
        Ok(Response::new(TombstoneResp { position_option }))
    }

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(MAX_BATCHES_IN_FLIGHT);
        let guard = self.in_flight.enter();
        let session = run_batch_appends(self.clone(), inbound, tx);
        tokio::spawn(async move {
            session.await;
            drop(guard);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Waits for a read's first responses. EventStoreDB sends the response
/// headers with the first message, so a read that fails before sending any
/// (a tombstoned stream) fails the call itself: clients see the error from
/// the call (`read_stream(...).await` in the Rust client), not from the
/// first message. Answering the call before the first message would let
/// tonic send "OK" headers straight away.
async fn first_batch(
    rx: &mut mpsc::Receiver<Vec<Result<ReadResp, Status>>>,
) -> Result<Vec<Result<ReadResp, Status>>, Status> {
    let first = rx.recv().await.unwrap_or_default();
    match first.first() {
        Some(Err(status)) => Err(status.clone()),
        _ => Ok(first),
    }
}

/// A batch whose chunks are still arriving (the Node.js client splits large
/// appends into several messages sharing one correlation id).
struct OpenBatch {
    stream: String,
    expected: ExpectedRevision,
    wire_expected: batch_append_resp::ExpectedStreamPosition,
    deadline: Option<SystemTime>,
    events: Vec<ProposedEvent>,
    size: usize,
    /// Set once the batch is known to fail; later chunks are dropped.
    failed: Option<WriteError>,
}

async fn run_batch_appends(
    service: StreamsService,
    mut inbound: Streaming<BatchAppendReq>,
    tx: mpsc::Sender<Result<BatchAppendResp, Status>>,
) {
    let permits = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let mut open: HashMap<Uuid, OpenBatch> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut closing = service.closing.clone();
    let mut shutting_down = false;
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            _ = closing.wait_for(|closing| *closing) => {
                shutting_down = true;
                break;
            }
        };
        let request = match message {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(%status, "batch append stream ended by the client");
                break;
            }
        };
        let correlation = match convert::uuid_from_wire(request.correlation_id) {
            Ok(id) => id,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                break;
            }
        };
        if let Err(status) = accept_chunk(&service, &mut open, correlation, request.options, request.proposed_messages)
        {
            let _ = tx.send(Err(status)).await;
            break;
        }
        if !request.is_final {
            continue;
        }
        let Some(batch) = open.remove(&correlation) else { continue };
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let store = service.store.clone();
        let tx = tx.clone();
        tasks.spawn(async move {
            let response = finish_batch(&store, correlation, batch).await;
            drop(permit);
            let _ = tx.send(Ok(response)).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    // Batches already accepted are written and answered before the call ends.
    while tasks.join_next().await.is_some() {}
    if shutting_down {
        let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
    }
}

fn accept_chunk(
    service: &StreamsService,
    open: &mut HashMap<Uuid, OpenBatch>,
    correlation: Uuid,
    options: Option<batch_append_req::Options>,
    messages: Vec<batch_append_req::ProposedMessage>,
) -> Result<(), Status> {
    if let Some(options) = options {
        if open.len() >= MAX_OPEN_BATCHES {
            return Err(Status::resource_exhausted(format!(
                "more than {MAX_OPEN_BATCHES} unfinished batches on one call"
            )));
        }
        let stream = convert::stream_name(options.stream_identifier)?;
        use batch_append_req::options::{DeadlineOption, ExpectedStreamPosition as In};
        use batch_append_resp::ExpectedStreamPosition as Out;
        let (expected, wire_expected) = match options.expected_stream_position {
            Some(In::StreamPosition(n)) => (ExpectedRevision::Exact(n), Out::StreamPosition(n)),
            Some(In::NoStream(())) => (ExpectedRevision::NoStream, Out::NoStream(())),
            Some(In::StreamExists(())) => (ExpectedRevision::StreamExists, Out::StreamExists(())),
            Some(In::Any(())) | None => (ExpectedRevision::Any, Out::Any(())),
        };
        let deadline = match options.deadline_option {
            Some(DeadlineOption::Deadline(d)) => {
                Some(UNIX_EPOCH + Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
            }
            Some(DeadlineOption::Deadline21100(t)) => {
                Some(UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
            }
            None => None,
        };
        let batch = OpenBatch { stream, expected, wire_expected, deadline, events: Vec::new(), size: 0, failed: None };
        if open.insert(correlation, batch).is_some() {
            return Err(Status::invalid_argument(format!("batch {correlation} sent its options twice")));
        }
    }
    let batch = open
        .get_mut(&correlation)
        .ok_or_else(|| Status::invalid_argument(format!("batch {correlation} did not start with its options")))?;
    if batch.failed.is_some() {
        return Ok(());
    }
    for m in messages {
        match convert::proposed_event(m.id, m.metadata, m.custom_metadata, m.data) {
            Ok(event) => {
                batch.size += event.size();
                batch.events.push(event);
            }
            Err(status) => {
                batch.failed = Some(WriteError::Invalid(status.message().to_owned()));
                batch.events.clear();
                return Ok(());
            }
        }
        if batch.size > service.max_append_size {
            batch.failed = Some(WriteError::TooLarge { size: batch.size, max: service.max_append_size });
            batch.events.clear();
            return Ok(());
        }
    }
    Ok(())
}

async fn finish_batch(store: &Store, correlation: Uuid, batch: OpenBatch) -> BatchAppendResp {
    let result = if let Some(error) = batch.failed {
        batch_append_resp::Result::Error(convert::batch_error(&batch.stream, error))
    } else if batch.deadline.is_some_and(|d| d < SystemTime::now()) {
        batch_append_resp::Result::Error(convert::batch_timeout())
    } else {
        match store.append(&batch.stream, batch.expected, batch.events).await {
            Ok(written) => batch_append_resp::Result::Success(batch_success(written)),
            Err(error) => batch_append_resp::Result::Error(convert::batch_error(&batch.stream, error)),
        }
    };
    BatchAppendResp {
        correlation_id: Some(convert::uuid_to_wire(correlation, IdFormat::String)),
        result: Some(result),
        stream_identifier: Some(convert::stream_identifier(&batch.stream)),
        expected_stream_position: Some(batch.wire_expected),
    }
}

fn append_success(written: WriteResult) -> append_resp::Success {
    use append_resp::success::{CurrentRevisionOption, PositionOption};
    append_resp::Success {
        current_revision_option: Some(match written.current_revision {
            CurrentRevision::NoStream => CurrentRevisionOption::NoStream(()),
            CurrentRevision::Current(n) => CurrentRevisionOption::CurrentRevision(n),
        }),
        position_option: Some(match written.position {
            Some(p) => PositionOption::Position(append_resp::Position { commit_position: p, prepare_position: p }),
            None => PositionOption::NoPosition(()),
        }),
    }
}

fn batch_success(written: WriteResult) -> batch_append_resp::Success {
    use batch_append_resp::success::{CurrentRevisionOption, PositionOption};
    batch_append_resp::Success {
        current_revision_option: Some(match written.current_revision {
            CurrentRevision::NoStream => CurrentRevisionOption::NoStream(()),
            CurrentRevision::Current(n) => CurrentRevisionOption::CurrentRevision(n),
        }),
        position_option: Some(match written.position {
            Some(p) => PositionOption::Position(AllStreamPosition { commit_position: p, prepare_position: p }),
            None => PositionOption::NoPosition(()),
        }),
    }
}

/// The wrong-expected-version body, filled in both the current and the 20.6
/// field sets so every client generation decodes it.
fn wrong_expected_version(current: CurrentRevision, expected: ExpectedRevision) -> append_resp::WrongExpectedVersion {
    use append_resp::wrong_expected_version::*;
    let (current_new, current_old) = match current {
        CurrentRevision::NoStream => {
            (CurrentRevisionOption::CurrentNoStream(()), CurrentRevisionOption2060::NoStream2060(()))
        }
        CurrentRevision::Current(n) => {
            (CurrentRevisionOption::CurrentRevision(n), CurrentRevisionOption2060::CurrentRevision2060(n))
        }
    };
    let (expected_new, expected_old) = match expected {
        ExpectedRevision::Any => {
            (ExpectedRevisionOption::ExpectedAny(()), Some(ExpectedRevisionOption2060::Any2060(())))
        }
        ExpectedRevision::NoStream => (ExpectedRevisionOption::ExpectedNoStream(()), None),
        ExpectedRevision::StreamExists => {
            (ExpectedRevisionOption::ExpectedStreamExists(()), Some(ExpectedRevisionOption2060::StreamExists2060(())))
        }
        ExpectedRevision::Exact(n) => {
            (ExpectedRevisionOption::ExpectedRevision(n), Some(ExpectedRevisionOption2060::ExpectedRevision2060(n)))
        }
    };
    append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(current_old),
        expected_revision_option_20_6_0: expected_old,
        current_revision_option: Some(current_new),
        expected_revision_option: Some(expected_new),
    }
}
