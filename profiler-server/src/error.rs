//! The server's one error-code enum ([`ErrorCode`]) and the error every request handler returns
//! ([`ApiError`]): each module keeps its own `thiserror` enum and says which code it maps to, and
//! the HTTP API and the gRPC services turn codes into statuses here, in one place.

use std::fmt;

/// What kind of failure a request met; decides the HTTP status, the gRPC status and the `code`
/// string of the JSON error body (`docs/api.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed input: a bad parameter, an undecodable profile; nothing was stored.
    InvalidArgument,
    /// The requested object (e.g. a trace id) is unknown.
    NotFound,
    /// The bearer token is missing or wrong.
    Unauthenticated,
    /// The request body is larger than `--max-body-bytes`.
    PayloadTooLarge,
    /// A failure of the server itself, e.g. of the store.
    Internal,
}

impl ErrorCode {
    /// The `code` string of the JSON error body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::Unauthenticated => "unauthenticated",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status for this code.
    pub fn http_status(self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code for this code.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PayloadTooLarge => tonic::Code::ResourceExhausted,
            Self::Internal => tonic::Code::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error on its way to a client: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Decides the status.
    pub code: ErrorCode,
    /// Says what failed and why; shown to the user.
    pub message: String,
}

impl ApiError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A 400 `invalid_argument` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// A 404 `not_found` error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// An `internal` error; the message is logged as well, since it points at a server fault.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(%message, "internal error");
        Self::new(ErrorCode::Internal, message)
    }

    /// Builds the error from a module error: its code and its full `source` chain as message.
    pub fn from_error<E: std::error::Error + ?Sized>(code: ErrorCode, error: &E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        if code == ErrorCode::Internal {
            Self::internal(message)
        } else {
            Self::new(code, message)
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        tonic::Status::new(error.code.grpc_code(), error.message)
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({
            "error": {"code": self.code.as_str(), "message": self.message}
        });
        (self.code.http_status(), axum::Json(body)).into_response()
    }
}

impl From<crate::query::QueryError> for ApiError {
    fn from(error: crate::query::QueryError) -> Self {
        Self::from_error(ErrorCode::InvalidArgument, &error)
    }
}

impl From<crate::ingest::pprof::PprofError> for ApiError {
    fn from(error: crate::ingest::pprof::PprofError) -> Self {
        Self::from_error(ErrorCode::InvalidArgument, &error)
    }
}

impl From<crate::ingest::pyroscope::PyroscopeError> for ApiError {
    fn from(error: crate::ingest::pyroscope::PyroscopeError) -> Self {
        Self::from_error(ErrorCode::InvalidArgument, &error)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::from_error(ErrorCode::Internal, &error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_the_documented_statuses() {
        let cases = [
            (
                ErrorCode::InvalidArgument,
                400,
                tonic::Code::InvalidArgument,
            ),
            (ErrorCode::NotFound, 404, tonic::Code::NotFound),
            (
                ErrorCode::Unauthenticated,
                401,
                tonic::Code::Unauthenticated,
            ),
            (
                ErrorCode::PayloadTooLarge,
                413,
                tonic::Code::ResourceExhausted,
            ),
            (ErrorCode::Internal, 500, tonic::Code::Internal),
        ];
        for (code, http, grpc) in cases {
            assert_eq!(code.http_status().as_u16(), http, "{code}");
            assert_eq!(code.grpc_code(), grpc, "{code}");
        }
    }

    #[test]
    fn messages_carry_the_source_chain() {
        let io = std::io::Error::other("disk on fire");
        let error = ApiError::from_error(ErrorCode::InvalidArgument, &io);
        assert_eq!(error.message, "disk on fire");
    }
}
