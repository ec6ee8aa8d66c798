//! The error type of the Client-Server API and its rendering as the spec's
//! error JSON (`errcode`, `error`, and extra fields such as `retry_after_ms`).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

/// A spec error code together with the HTTP status that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Forbidden,
    UnknownToken {
        soft_logout: bool,
    },
    MissingToken,
    BadJson,
    NotJson,
    NotFound,
    LimitExceeded {
        retry_after_ms: u64,
    },
    Unrecognized,
    Unknown,
    Unauthorized,
    UserDeactivated,
    UserInUse,
    InvalidUsername,
    RoomInUse,
    InvalidRoomState,
    ThreepidInUse,
    InvalidParam,
    MissingParam,
    TooLarge,
    Exclusive,
    UnsupportedRoomVersion,
    IncompatibleRoomVersion,
    /// A resident server cannot check any allow condition of a restricted room.
    UnableToAuthoriseJoin,
    /// A resident server cannot sign a restricted join that meets a condition.
    UnableToGrantJoin,
    BadState,
    GuestAccessForbidden,
    ServerNotTrusted,
    CannotLeaveServerNotice,
    /// 409: an upload to a media id that already has content.
    CannotOverwriteMedia,
    /// 504: media reserved by `/create` whose content has not arrived in time.
    NotYetUploaded,
    /// 403: a limit of the user's account, such as the media quota; the spec
    /// requires an `info_uri` that explains the limit.
    UserLimitExceeded {
        info_uri: String,
    },
    /// A user-interactive authentication step is needed: 401 with the flows in the body,
    /// and `errcode` only when a stage failed.
    UserInteractive,
    /// A namespaced error code that the spec does not define.
    Custom {
        errcode: String,
        status: StatusCode,
        extra: Map<String, Value>,
    },
}

impl ErrorKind {
    fn errcode(&self) -> &str {
        match self {
            Self::Forbidden => "M_FORBIDDEN",
            Self::UnknownToken { .. } => "M_UNKNOWN_TOKEN",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::BadJson => "M_BAD_JSON",
            Self::NotJson => "M_NOT_JSON",
            Self::NotFound => "M_NOT_FOUND",
            Self::LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            Self::Unrecognized => "M_UNRECOGNIZED",
            Self::Unknown => "M_UNKNOWN",
            Self::Unauthorized => "M_UNAUTHORIZED",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::UserInUse => "M_USER_IN_USE",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::RoomInUse => "M_ROOM_IN_USE",
            Self::InvalidRoomState => "M_INVALID_ROOM_STATE",
            Self::ThreepidInUse => "M_THREEPID_IN_USE",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::MissingParam => "M_MISSING_PARAM",
            Self::TooLarge => "M_TOO_LARGE",
            Self::Exclusive => "M_EXCLUSIVE",
            Self::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            Self::IncompatibleRoomVersion => "M_INCOMPATIBLE_ROOM_VERSION",
            Self::UnableToAuthoriseJoin => "M_UNABLE_TO_AUTHORISE_JOIN",
            Self::UnableToGrantJoin => "M_UNABLE_TO_GRANT_JOIN",
            Self::BadState => "M_BAD_STATE",
            Self::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            Self::ServerNotTrusted => "M_SERVER_NOT_TRUSTED",
            Self::CannotLeaveServerNotice => "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
            Self::CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            Self::NotYetUploaded => "M_NOT_YET_UPLOADED",
            Self::UserLimitExceeded { .. } => "M_USER_LIMIT_EXCEEDED",
            Self::UserInteractive => "M_UNAUTHORIZED",
            Self::Custom { errcode, .. } => errcode,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden
            | Self::UserDeactivated
            | Self::GuestAccessForbidden
            | Self::ServerNotTrusted
            | Self::CannotLeaveServerNotice
            | Self::UserLimitExceeded { .. } => StatusCode::FORBIDDEN,
            Self::CannotOverwriteMedia => StatusCode::CONFLICT,
            Self::NotYetUploaded => StatusCode::GATEWAY_TIMEOUT,
            Self::UnknownToken { .. } | Self::MissingToken | Self::Unauthorized | Self::UserInteractive => {
                StatusCode::UNAUTHORIZED
            }
            Self::NotFound | Self::Unrecognized => StatusCode::NOT_FOUND,
            Self::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Custom { status, .. } => *status,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error returned to a client: what kind it is and a message a person can act on.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// Overrides the status that `kind` implies (for example 405 for `M_UNRECOGNIZED`).
    pub status: Option<StatusCode>,
    /// Extra JSON fields for the body, used by user-interactive auth (401 with flows).
    pub body: Option<Map<String, Value>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), status: None, body: None }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }

    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MissingParam, message)
    }

    pub fn unrecognized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unrecognized, message)
    }

    /// An internal failure. The details go to the log; the client sees a generic message.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, context, "internal error");
        Self::new(ErrorKind::Unknown, format!("Internal server error while {context}"))
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn errcode(&self) -> &str {
        self.kind.errcode()
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.kind.status())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.errcode(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Self::internal("accessing the database", err)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = self.body.unwrap_or_default();
        if self.kind != ErrorKind::UserInteractive {
            body.insert("errcode".into(), json!(self.kind.errcode()));
            body.insert("error".into(), json!(self.message));
        }
        match &self.kind {
            ErrorKind::UnknownToken { soft_logout: true } => {
                body.insert("soft_logout".into(), json!(true));
            }
            ErrorKind::LimitExceeded { retry_after_ms } => {
                body.insert("retry_after_ms".into(), json!(retry_after_ms));
            }
            ErrorKind::UserLimitExceeded { info_uri } => {
                body.insert("info_uri".into(), json!(info_uri));
            }
            ErrorKind::Custom { extra, .. } => {
                for (key, value) in extra {
                    body.insert(key.clone(), value.clone());
                }
            }
            _ => {}
        }
        let mut response = (status, Json(Value::Object(body))).into_response();
        if let ErrorKind::LimitExceeded { retry_after_ms } = self.kind {
            let seconds = retry_after_ms.div_ceil(1000).to_string();
            if let Ok(value) = seconds.parse() {
                response.headers_mut().insert(http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}
