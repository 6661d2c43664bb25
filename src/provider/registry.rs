//! The configured providers by name (`echo`, `openai`, `anthropic`, and any named
//! OpenAI-compatible endpoint), built once at start and shared read-only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Provider;
use super::anthropic::Anthropic;
use super::echo::Echo;
use super::openai::OpenAi;
use super::{EndpointError, HttpProviderConfig, ReplyLimits};
use crate::config::{
    ANTHROPIC_DEFAULT_BASE_URL, Config, ConfigError, OPENAI_DEFAULT_BASE_URL, Secret,
};

/// The providers sessions may name, and which one is the default.
#[derive(Debug)]
pub struct ProviderRegistry {
    providers: BTreeMap<String, Arc<Provider>>,
    default_name: String,
    /// Overrides the default provider's own default model.
    default_model: Option<String>,
}

/// A session named a provider that is not configured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown provider `{name}`; configured: {configured}")]
pub struct UnknownProvider {
    pub name: String,
    pub configured: String,
}

impl ProviderRegistry {
    /// Builds every configured provider: `echo` always, `openai` and `anthropic` when a
    /// key or a non-default base URL is set, and each named OpenAI-compatible endpoint.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let timeout = config.provider_timeout();
        let echo = Echo::new(Duration::from_millis(config.echo_stream_delay_ms));
        let mut providers = vec![("echo".to_owned(), Provider::Echo(echo))];
        let http = |name: &str, base_url: &str, key: &Option<Secret>, model: Option<String>| {
            Ok::<_, ConfigError>(HttpProviderConfig {
                name: name.to_owned(),
                base_url: checked_base_url(name, base_url)?,
                api_key: key.clone(),
                default_model: model,
                timeout,
                reply_limits: ReplyLimits {
                    max_bytes: config.max_reply_bytes,
                    max_tool_calls: config.max_tool_calls_per_reply,
                },
            })
        };
        // An empty value (as a copied `.env.example` has) means "not set".
        let present = |key: &Option<Secret>| key.clone().filter(|k| !k.expose().is_empty());
        let openai_key = present(&config.openai_api_key);
        let anthropic_key = present(&config.anthropic_api_key);
        if openai_key.is_some() || config.openai_base_url != OPENAI_DEFAULT_BASE_URL {
            let config = http(
                "openai",
                &config.openai_base_url,
                &openai_key,
                Some(config.openai_default_model.clone()),
            )?;
            providers.push(("openai".to_owned(), Provider::OpenAi(openai(config)?)));
        }
        if anthropic_key.is_some() || config.anthropic_base_url != ANTHROPIC_DEFAULT_BASE_URL {
            let config = http(
                "anthropic",
                &config.anthropic_base_url,
                &anthropic_key,
                Some(config.anthropic_default_model.clone()),
            )?;
            let name = config.name.clone();
            let anthropic = Anthropic::new(config).map_err(|e| endpoint_error(&name, &e))?;
            providers.push(("anthropic".to_owned(), Provider::Anthropic(anthropic)));
        }
        for endpoint in &config.openai_compatible.0 {
            if providers.iter().any(|(name, _)| *name == endpoint.name) {
                return Err(ConfigError::new(format!(
                    "provider name `{}` is used twice",
                    endpoint.name
                )));
            }
            let prefix = endpoint.name.to_uppercase().replace('-', "_");
            let key = std::env::var(format!("{prefix}_API_KEY"))
                .ok()
                .filter(|k| !k.is_empty())
                .map(Secret::new);
            let model = std::env::var(format!("{prefix}_DEFAULT_MODEL"))
                .ok()
                .filter(|m| !m.is_empty());
            let config = http(&endpoint.name, &endpoint.base_url, &key, model)?;
            providers.push((endpoint.name.clone(), Provider::OpenAi(openai(config)?)));
        }
        let default_model = config
            .default_model
            .clone()
            .filter(|m| !m.trim().is_empty());
        Self::new(providers, &config.default_provider, default_model)
            .map_err(|e| ConfigError::new(format!("DEFAULT_PROVIDER: {e}")))
    }

    /// Fails when the default provider is not among `providers`.
    pub fn new(
        providers: impl IntoIterator<Item = (String, Provider)>,
        default_name: &str,
        default_model: Option<String>,
    ) -> Result<Self, UnknownProvider> {
        let providers: BTreeMap<_, _> = providers
            .into_iter()
            .map(|(name, provider)| (name, Arc::new(provider)))
            .collect();
        let registry = Self {
            providers,
            default_name: default_name.to_owned(),
            default_model,
        };
        registry.get(default_name)?;
        Ok(registry)
    }

    /// The provider of that name.
    pub fn get(&self, name: &str) -> Result<&Arc<Provider>, UnknownProvider> {
        self.providers.get(name).ok_or_else(|| UnknownProvider {
            name: name.to_owned(),
            configured: self.names().collect::<Vec<_>>().join(", "),
        })
    }

    /// The provider sessions get when they name none.
    pub fn default_name(&self) -> &str {
        &self.default_name
    }

    /// The model a session of `provider` gets when it names none.
    pub fn default_model(&self, provider: &str) -> Option<&str> {
        if provider == self.default_name
            && let Some(model) = &self.default_model
        {
            return Some(model);
        }
        self.providers.get(provider)?.default_model()
    }

    /// Every configured name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }
}

/// A Chat Completions provider on a checked base URL.
fn openai(config: HttpProviderConfig) -> Result<OpenAi, ConfigError> {
    let name = config.name.clone();
    OpenAi::new(config).map_err(|error| endpoint_error(&name, &error))
}

fn endpoint_error(name: &str, error: &EndpointError) -> ConfigError {
    ConfigError::new(format!("{name}: {error}"))
}

/// Only http and https; the trailing slash is dropped.
fn checked_base_url(name: &str, url: &str) -> Result<String, ConfigError> {
    let trimmed = url.trim().trim_end_matches('/');
    let scheme_ok = trimmed.starts_with("http://") || trimmed.starts_with("https://");
    if !scheme_ok || reqwest::Url::parse(trimmed).is_err() {
        return Err(ConfigError::new(format!(
            "base URL of provider `{name}` must be an http or https URL, got `{url}`"
        )));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_default_provider_must_be_configured() {
        let error = ProviderRegistry::new(
            [("echo".into(), Provider::Echo(Echo::default()))],
            "openai",
            None,
        )
        .unwrap_err();
        assert_eq!(error.name, "openai");
        assert_eq!(error.configured, "echo");
    }

    #[test]
    fn default_model_override_applies_to_the_default_provider_only() {
        let registry = ProviderRegistry::new(
            [
                ("echo".into(), Provider::Echo(Echo::default())),
                ("other".into(), Provider::Echo(Echo::default())),
            ],
            "echo",
            Some("echo-2".into()),
        )
        .unwrap();
        assert_eq!(registry.default_model("echo"), Some("echo-2"));
        assert_eq!(registry.default_model("other"), Some("echo-1"));
    }

    #[test]
    fn base_urls_must_be_http_or_https() {
        assert_eq!(
            checked_base_url("x", "http://h:1/v1/").unwrap(),
            "http://h:1/v1"
        );
        assert!(checked_base_url("x", "file:///etc/passwd").is_err());
        assert!(checked_base_url("x", "not a url").is_err());
    }

    #[test]
    fn named_endpoints_become_providers() {
        let config = Config::parse_from([
            "x",
            "--openai-compatible",
            "local-llm=http://127.0.0.1:9/v1",
            "--default-provider",
            "local-llm",
        ]);
        let registry = ProviderRegistry::from_config(&config).unwrap();
        assert_eq!(registry.names().collect::<Vec<_>>(), ["echo", "local-llm"]);
        assert_eq!(registry.get("local-llm").unwrap().protocol(), "openai");
    }

    #[test]
    fn the_env_example_as_a_dotenv_file_gives_the_defaults() {
        let example = include_str!("../../.env.example");
        let mut args = vec!["x".to_owned()];
        for line in example.lines().filter(|l| !l.starts_with('#')) {
            if let Some((key, value)) = line.split_once('=') {
                let flag = match key {
                    "BIND_ADDR" => "bind".to_owned(),
                    "RUST_LOG" => continue,
                    other => other.to_lowercase().replace('_', "-"),
                };
                if !value.is_empty() {
                    args.push(format!("--{flag}={value}"));
                }
            }
        }
        args.push("--openai-api-key=".to_owned());
        args.push("--anthropic-api-key=".to_owned());
        args.push("--default-model=".to_owned());
        let config = Config::try_parse_from(args).unwrap();
        let registry = ProviderRegistry::from_config(&config).unwrap();
        assert_eq!(registry.names().collect::<Vec<_>>(), ["echo"]);
    }
}
