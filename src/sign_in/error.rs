//! [`SignInError`]: why a sign-in was refused, with its stable code (HTTP status at the edge).

/// Why a sign-in was refused; mapped to HTTP at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("set auth.jwt_secret to issue tokens")]
    Disabled,
    #[error("slow down")]
    TooManyAttempts,
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    InvalidSignature(String),
    #[error("unknown, used or expired nonce")]
    Nonce,
    #[error("{0}")]
    Domain(String),
    #[error("the signed message has expired")]
    Expired,
    #[error("this initData has signed in already; reopen the Mini App")]
    Replayed,
    #[error("too many sign-ins in progress; retry shortly")]
    Busy,
}

impl SignInError {
    pub fn code(&self) -> &'static str {
        match self {
            SignInError::Disabled => "SignInDisabled",
            SignInError::TooManyAttempts => "TooManyAttempts",
            SignInError::Malformed(_) => "MalformedSignIn",
            SignInError::InvalidSignature(_) => "InvalidSignature",
            SignInError::Nonce => "NonceInvalid",
            SignInError::Domain(_) => "DomainNotAllowed",
            SignInError::Expired => "Expired",
            SignInError::Replayed => "ReplayedSignIn",
            SignInError::Busy => "SignInBusy",
        }
    }
}
