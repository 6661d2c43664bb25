//! OpenAI Chat Completions (placeholder until the mapping lands).

use bytes::Bytes;

use super::{ChatReply, ChatRequest, HttpProviderConfig, ProviderError, http};

/// A client for one OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct OpenAi {
    config: HttpProviderConfig,
    client: reqwest::Client,
}

impl OpenAi {
    pub fn new(config: HttpProviderConfig) -> Self {
        let client = http::client(config.timeout);
        Self { config, client }
    }

    pub fn default_model(&self) -> Option<&str> {
        self.config.default_model.as_deref()
    }

    pub fn encode(&self, _request: &ChatRequest<'_>) -> Result<Bytes, ProviderError> {
        let _ = &self.client;
        Err(ProviderError::InvalidReply("not yet".into()))
    }

    pub async fn send(&self, _body: Bytes) -> Result<ChatReply, ProviderError> {
        Err(ProviderError::InvalidReply("not yet".into()))
    }
}
