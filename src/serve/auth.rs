//! Bearer-token authorisation: with `--token-file`, every route but `/healthz` needs
//! `Authorization: Bearer <token>`. Tokens are compared in constant time (of their SHA-256
//! digests, so not even the length leaks).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::error::{Error, Result};

/// The expected token, kept as its digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(redacted)")
    }
}

impl Token {
    /// Reads the token from `path`: its first line, without surrounding whitespace; it must be
    /// at least 16 printable ASCII characters.
    pub fn from_file(path: &Path) -> Result<Token> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::input(
                path,
                "the token must be one line of at least 16 printable ASCII characters without spaces",
            ));
        }
        Ok(Token::new(token))
    }

    pub fn new(token: &str) -> Token {
        Token { digest: Sha256::digest(token.as_bytes()).into() }
    }

    /// Whether `presented` is the token (constant time).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.digest.ct_eq(&digest).into()
    }
}

/// Middleware: 401 unless the request carries the token (when one is configured).
pub async fn require(
    State(token): State<Option<Arc<Token>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(given) if token.matches(given) => next.run(request).await,
        Some(_) => unauthorised("wrong bearer token"),
        None if request.headers().contains_key(header::AUTHORIZATION) => {
            unauthorised("malformed Authorization header; expected 'Bearer <token>'")
        }
        None => unauthorised("missing Authorization: Bearer <token>"),
    }
}

fn unauthorised(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = Token::new("0123456789abcdef");
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcdef "));
        assert!(!token.matches(b""));
    }

    #[test]
    fn short_or_spaced_token_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "short\n").unwrap();
        assert!(Token::from_file(&path).unwrap_err().to_string().contains("at least 16"));
        std::fs::write(&path, "has a space in it, long enough\n").unwrap();
        assert!(Token::from_file(&path).is_err());
        std::fs::write(&path, "  0123456789abcdef  \nignored\n").unwrap();
        assert!(Token::from_file(&path).unwrap().matches(b"0123456789abcdef"));
    }
}
