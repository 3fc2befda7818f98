//! The projection endpoints: list and read statuses, deploy (`PUT` with the
//! module as the body and the settings as query parameters), delete, the
//! lifecycle actions (stop, start, reset, retry, rollback) and `/metrics`.
//!
//! Each handler checks the request (token, name, parameters) and hands the
//! change to [`Deployments`], which decides whether it fits the projection's
//! state; nothing here keeps state or decides a change itself. Reading
//! documents is `documents`' business.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::auth::{Admin, Reader};
use super::errors::{bad, unknown, AppError};
use super::upload::read_body;
use super::AppState;
use crate::deployments::{Deployed, Deployment};
use crate::settings::{DeployOptions, ProjectionLimits};
use crate::status::Status;

pub(super) fn routes() -> Router<AppState> {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/projections", get(list_projections))
        .route("/projections/{name}", get(get_projection).put(deploy).delete(delete_projection));
    Action::ALL.into_iter().fold(router, |router, action| {
        router.route(
            action.path(),
            post(move |admin: Admin, state: State<AppState>, name: Path<String>| act(admin, state, name, action)),
        )
    })
}

impl AppState {
    /// The deployment named `name`, or the API's 404 for it.
    pub(super) fn deployment(&self, name: &str) -> Result<Arc<Deployment>, AppError> {
        self.deployments.get(name).ok_or_else(|| unknown(name))
    }
}

/// A lifecycle action, `POST /projections/{name}/<action>`; each answers with the new status.
#[derive(Debug, Clone, Copy)]
enum Action {
    Stop,
    Start,
    Reset,
    Retry,
    Rollback,
}

impl Action {
    const ALL: [Action; 5] = [Action::Stop, Action::Start, Action::Reset, Action::Retry, Action::Rollback];

    fn path(self) -> &'static str {
        match self {
            Action::Stop => "/projections/{name}/stop",
            Action::Start => "/projections/{name}/start",
            Action::Reset => "/projections/{name}/reset",
            Action::Retry => "/projections/{name}/retry",
            Action::Rollback => "/projections/{name}/rollback",
        }
    }
}

async fn act(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    action: Action,
) -> Result<Json<Status>, AppError> {
    valid_name(&name)?;
    let deployments = &state.deployments;
    let status = match action {
        Action::Stop => deployments.stop(&name).await?,
        Action::Start => deployments.start(&name).await?,
        Action::Reset => deployments.reset(&name).await?,
        Action::Retry => deployments.retry(&name).await?,
        Action::Rollback => deployments.rollback(&name).await?,
    };
    Ok(Json(status))
}

async fn metrics(_: Reader, State(state): State<AppState>) -> Response {
    let deployments = &state.deployments;
    deployments.metrics().feed_readers(deployments.feed_readers());
    let text = deployments.metrics().render(&deployments.statuses());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn list_projections(_: Reader, State(state): State<AppState>) -> Json<Vec<Status>> {
    Json(state.deployments.statuses())
}

async fn get_projection(
    _: Reader,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Status>, AppError> {
    Ok(Json(state.deployments.status(&*state.deployment(&name)?)))
}

async fn deploy(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    valid_name(&name)?;
    let options = parse_deploy_options(raw.as_deref())?;
    let body = read_body(body, "module_too_large", || {
        format!("the module is larger than the limit of {} bytes", state.config.max_module_bytes)
    })?;
    if body.is_empty() {
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_wasm",
            "the request body is empty; send the module's bytes",
        ));
    }
    let (deployed, status) = state.deployments.deploy(&name, body.to_vec(), options).await?;
    let code = match deployed {
        Deployed::Created => StatusCode::CREATED,
        Deployed::Rebuilding => StatusCode::ACCEPTED,
        Deployed::Swapped | Deployed::Unchanged => StatusCode::OK,
    };
    Ok((code, [(header::LOCATION, format!("/projections/{name}"))], Json(status)).into_response())
}

async fn delete_projection(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    valid_name(&name)?;
    state.deployments.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Projection names: `[a-z0-9][a-z0-9-]{0,62}`, so they are safe in paths.
fn valid_name(name: &str) -> Result<(), AppError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("projection name '{name}' must match [a-z0-9][a-z0-9-]{{0,62}}"),
        ))
    }
}

/// A deploy's query parameters: `mode`, `on_error`, `memory_mb`, `batch_timeout_ms`.
fn parse_deploy_options(raw: Option<&str>) -> Result<DeployOptions, AppError> {
    let mut options = DeployOptions::default();
    let mut limits = ProjectionLimits::default();
    let number = |name: &str, value: &str, range: std::ops::RangeInclusive<u64>| {
        value.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
            bad(
                "invalid_parameter",
                format!("{name} '{value}' must be a whole number from {} to {}", range.start(), range.end()),
            )
        })
    };
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "mode" => options.mode = Some(value.parse().map_err(|m| bad("invalid_parameter", m))?),
            "on_error" => options.on_error = Some(value.parse().map_err(|m| bad("invalid_parameter", m))?),
            "memory_mb" => limits.memory_mb = Some(number("memory_mb", &value, ProjectionLimits::MEMORY_MB)?),
            "batch_timeout_ms" => {
                limits.batch_timeout_ms = Some(number("batch_timeout_ms", &value, ProjectionLimits::BATCH_TIMEOUT_MS)?)
            }
            other => return Err(bad("unknown_parameter", format!("unknown query parameter '{other}'"))),
        }
    }
    if limits != ProjectionLimits::default() {
        options.limits = Some(limits);
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Mode, OnError};

    /// The error's status and code, for comparing.
    fn refusal<T: std::fmt::Debug>(result: Result<T, AppError>) -> (StatusCode, &'static str) {
        let error = result.expect_err("refused");
        (error.status(), error.code())
    }

    #[test]
    fn names_are_lowercase_letters_digits_and_dashes_after_the_first_up_to_63_bytes() {
        let (longest, too_long) = ("a".repeat(63), "a".repeat(64));
        for name in ["a", "0", "orders", "user-directory", "v2-orders-9", "a-", "9lives", longest.as_str()] {
            assert!(valid_name(name).is_ok(), "{name}");
        }
        let refused =
            ["", too_long.as_str(), "Orders", "ordErs", "-orders", "or_ders", "or.ders", "or ders", "ordérs", ".."];
        for name in refused {
            assert_eq!(refusal(valid_name(name)), (StatusCode::BAD_REQUEST, "invalid_name"), "{name:?}");
        }
    }

    #[test]
    fn no_deploy_parameters_keep_every_setting() {
        for raw in [None, Some("")] {
            let options = parse_deploy_options(raw).expect("valid");
            assert_eq!((options.mode, options.on_error, options.limits), (None, None, None));
        }
    }

    #[test]
    fn deploy_parameters_set_the_mode_the_policy_and_the_limits() {
        let options =
            parse_deploy_options(Some("mode=rebuild&on_error=skip&memory_mb=64&batch_timeout_ms=2000")).expect("valid");
        assert_eq!(options.mode, Some(Mode::Rebuild));
        assert_eq!(options.on_error, Some(OnError::Skip));
        assert_eq!(options.limits, Some(ProjectionLimits { memory_mb: Some(64), batch_timeout_ms: Some(2000) }));
        let options = parse_deploy_options(Some("mode=continue&memory_mb=1")).expect("valid");
        assert_eq!(options.mode, Some(Mode::Continue));
        assert_eq!(options.limits, Some(ProjectionLimits { memory_mb: Some(1), batch_timeout_ms: None }));
    }

    #[test]
    fn limits_are_accepted_at_the_ends_of_their_ranges_and_refused_past_them() {
        let (memory, timeout) = (ProjectionLimits::MEMORY_MB, ProjectionLimits::BATCH_TIMEOUT_MS);
        for (name, value) in
            [("memory_mb", memory.start()), ("memory_mb", memory.end()), ("batch_timeout_ms", timeout.start())]
        {
            assert!(parse_deploy_options(Some(&format!("{name}={value}"))).is_ok(), "{name}={value}");
        }
        assert!(parse_deploy_options(Some(&format!("batch_timeout_ms={}", timeout.end()))).is_ok());
        let refused = [
            format!("memory_mb={}", memory.start() - 1),
            format!("memory_mb={}", memory.end() + 1),
            format!("batch_timeout_ms={}", timeout.start() - 1),
            format!("batch_timeout_ms={}", timeout.end() + 1),
            "memory_mb=-1".to_owned(),
            "memory_mb=1.5".to_owned(),
            "memory_mb=".to_owned(),
            "mode=sideways".to_owned(),
            "on_error=ignore".to_owned(),
        ];
        for raw in refused {
            assert_eq!(
                refusal(parse_deploy_options(Some(&raw))),
                (StatusCode::BAD_REQUEST, "invalid_parameter"),
                "{raw}"
            );
        }
    }

    #[test]
    fn an_unknown_deploy_parameter_is_refused_by_name() {
        let error = parse_deploy_options(Some("mode=continue&memory=64")).expect_err("refused");
        assert_eq!((error.status(), error.code()), (StatusCode::BAD_REQUEST, "unknown_parameter"));
        assert_eq!(error.message(), "unknown query parameter 'memory'");
    }
}
