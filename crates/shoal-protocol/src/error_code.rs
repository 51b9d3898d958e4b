//! The single mapping from service errors to gRPC and HTTP statuses.

/// What kind of failure a service error is; handlers never pick status codes themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The caller asked for something malformed.
    InvalidArgument,
    /// The thing asked for does not exist here.
    NotFound,
    /// A precondition (state) does not hold.
    FailedPrecondition,
    /// The service is overloaded; try later.
    ResourceExhausted,
    /// A remote dependency (origin, parent) failed.
    Unavailable,
    /// The operation was cancelled or the service is shutting down.
    Cancelled,
    /// A local fault.
    Internal,
    /// The method is not served.
    Unimplemented,
}

impl ErrorCode {
    pub fn to_grpc(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::FailedPrecondition => tonic::Code::FailedPrecondition,
            Self::ResourceExhausted => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Cancelled => tonic::Code::Cancelled,
            Self::Internal => tonic::Code::Internal,
            Self::Unimplemented => tonic::Code::Unimplemented,
        }
    }

    pub fn to_http(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::NotFound => 404,
            Self::FailedPrecondition => 412,
            Self::ResourceExhausted => 429,
            Self::Unavailable => 502,
            Self::Cancelled => 499,
            Self::Internal => 500,
            Self::Unimplemented => 501,
        }
    }

    /// A gRPC status with this code; `message` is the error's display chain.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.to_grpc(), message)
    }
}
