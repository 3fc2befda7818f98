//! Request bodies: reading one into an error the caller can act on (413
//! with the endpoint's own code past its size limit), and the middleware
//! that lets a client still sending a refused upload read the answer.
//!
//! The size limits themselves are the router's (`DefaultBodyLimit`) and the
//! endpoints' business; this module neither sets nor checks them, it only
//! says what a body over one looks like and drains what a refusal left unread.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::errors::AppError;

/// The body, or why it could not be read: over the endpoint's size limit it
/// is a 413 with `too_large_code` and the message `too_large` gives; any
/// other failure keeps its status, with the code `invalid_body`.
pub(super) fn read_body(
    body: Result<Bytes, BytesRejection>,
    too_large_code: &'static str,
    too_large: impl FnOnce() -> String,
) -> Result<Bytes, AppError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::new(StatusCode::PAYLOAD_TOO_LARGE, too_large_code, too_large()),
        status => AppError::new(status, "invalid_body", rejection.body_text()),
    })
}

/// Longest a refused request's unread body is read on before the answer goes out.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Reads and discards the rest of a body the handler did not read when it
/// refuses the request (an upload with a wrong token, a module over the size
/// limit), so the client, still sending, gets the answer instead of a broken
/// pipe. At most the upload limit is read after a refusal, eight times it
/// after a 413 (a 100 MiB upload gets its 413), and for at most
/// `DRAIN_WAIT`; past that the connection is closed.
pub(super) async fn finish_refused_upload(
    request: axum::extract::Request,
    next: axum::middleware::Next,
    limit: usize,
) -> Response {
    let (parts, body) = request.into_parts();
    let slot = Arc::new(parking_lot::Mutex::new(Some(body)));
    let response =
        next.run(axum::extract::Request::from_parts(parts, axum::body::Body::new(SharedBody(slot.clone())))).await;
    let status = response.status();
    let bound = if status == StatusCode::PAYLOAD_TOO_LARGE { limit.saturating_mul(8) } else { limit };
    let unread = slot.lock().take().filter(|body| status.is_client_error() && !body.is_end_stream());
    if let Some(mut body) = unread {
        let drain = async {
            let mut read = 0usize;
            while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > bound {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_WAIT, drain).await;
    }
    response
}

/// A request body that stays with the middleware when the handler drops it unread.
struct SharedBody(Arc<parking_lot::Mutex<Option<axum::body::Body>>>);

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.0.lock().as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().as_ref().map(HttpBody::size_hint).unwrap_or_default()
    }
}
