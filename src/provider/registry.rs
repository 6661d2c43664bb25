//! The configured providers by name (`echo`, `openai`, `anthropic`, and any named
//! OpenAI-compatible endpoint), built once at start and shared read-only.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Provider;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::echo::Echo;

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
}
