//! Which URLs an endpoint may have: `http` or `https`, a host, at most
//! [`MAX_ENDPOINT_URL_LEN`] bytes, no `user:pass@` (deliveries are signed;
//! a password in a URL ends up in logs) and no `#fragment` (never sent, so
//! always a mistake).
//!
//! Any host is allowed, loopback and private addresses included: the tests
//! deliver to 127.0.0.1, and so may an operator's own receivers. The service
//! does not defend against server-side request forgery by itself; an
//! operator who lets merchants choose endpoints and needs that protection
//! runs the service behind an egress proxy (the sender honours the
//! `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` environment variables) that
//! refuses internal addresses.

use std::fmt;

use url::Url;

use super::WebhookError;

/// Longest endpoint URL, in bytes, as given and as normalised: what
/// browsers and most servers handle, and plenty for a receiver's path.
pub const MAX_ENDPOINT_URL_LEN: usize = 2_048;

/// A validated endpoint URL, normalised (lower-case scheme and host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    pub fn parse(text: &str) -> Result<EndpointUrl, WebhookError> {
        if text.len() > MAX_ENDPOINT_URL_LEN {
            return Err(WebhookError::UrlTooLong { len: text.len() });
        }
        // The URL parser silently drops tabs and newlines and trims spaces;
        // a URL that needed that is not the one the merchant meant to type.
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(WebhookError::UrlWhitespace);
        }
        let url = Url::parse(text).map_err(|e| WebhookError::UrlSyntax(syntax_reason(e)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::UrlScheme(url.scheme().to_string()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(WebhookError::UrlNoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(WebhookError::UrlUserinfo);
        }
        if url.fragment().is_some() {
            return Err(WebhookError::UrlFragment);
        }
        // Normalising percent-encodes non-ASCII characters, which can make
        // the URL longer than it was typed.
        if url.as_str().len() > MAX_ENDPOINT_URL_LEN {
            return Err(WebhookError::UrlTooLong { len: url.as_str().len() });
        }
        Ok(EndpointUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub(super) fn as_url(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn syntax_reason(error: url::ParseError) -> String {
    match error {
        url::ParseError::RelativeUrlWithoutBase => {
            "it is not an absolute URL; write it in full, such as https://example.com/webhooks".to_string()
        }
        url::ParseError::EmptyHost => "it has no host".to_string(),
        other => format!("it cannot be read as a URL ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> WebhookError {
        EndpointUrl::parse(text).unwrap_err()
    }

    #[test]
    fn http_and_https_urls_with_a_host_are_accepted() {
        for ok in [
            "https://example.com/webhooks",
            "http://127.0.0.1:8080/hook?token=abc",
            "http://[::1]:9000/",
            "https://hooks.example.com",
            "HTTPS://Example.COM/Path",
        ] {
            assert!(EndpointUrl::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            EndpointUrl::parse("HTTPS://Example.COM/Path").unwrap().as_str(),
            "https://example.com/Path"
        );
        assert_eq!(
            EndpointUrl::parse("https://hooks.example.com").unwrap().to_string(),
            "https://hooks.example.com/"
        );
    }

    #[test]
    fn the_length_limit_at_its_edge() {
        let base = "https://example.com/";
        let at_limit = format!("{base}{}", "a".repeat(MAX_ENDPOINT_URL_LEN - base.len()));
        assert!(EndpointUrl::parse(&at_limit).is_ok());
        let over = format!("{at_limit}a");
        assert_eq!(refused(&over), WebhookError::UrlTooLong { len: 2_049 });
        assert_eq!(
            refused(&over).to_string(),
            "invalid webhook endpoint URL: it is 2049 bytes long; at most 2048 are allowed"
        );
        // 'é' is 2 bytes typed and 6 percent-encoded.
        let grows = format!("{base}{}", "é".repeat(400));
        assert!(grows.len() <= MAX_ENDPOINT_URL_LEN);
        assert!(matches!(refused(&grows), WebhookError::UrlTooLong { len } if len > MAX_ENDPOINT_URL_LEN));
    }

    #[test]
    fn other_schemes_are_refused_with_the_scheme_named() {
        for (text, scheme) in [
            ("ftp://example.com/x", "ftp"),
            ("file:///etc/passwd", "file"),
            ("javascript:alert(1)", "javascript"),
        ] {
            assert_eq!(refused(text), WebhookError::UrlScheme(scheme.to_string()), "{text}");
        }
        assert_eq!(
            refused("ftp://example.com").to_string(),
            "invalid webhook endpoint URL: the scheme is `ftp`; use http or https"
        );
    }

    #[test]
    fn userinfo_fragments_and_whitespace_are_refused() {
        assert_eq!(refused("https://user:pass@example.com/"), WebhookError::UrlUserinfo);
        assert_eq!(refused("https://user@example.com/"), WebhookError::UrlUserinfo);
        assert_eq!(refused("https://:pass@example.com/"), WebhookError::UrlUserinfo);
        assert_eq!(refused("https://example.com/#top"), WebhookError::UrlFragment);
        assert_eq!(refused("https://example.com/#"), WebhookError::UrlFragment);
        for text in [
            " https://example.com/",
            "https://example.com/a b",
            "https://exa\tmple.com/",
            "https://example.com/\n",
        ] {
            assert_eq!(refused(text), WebhookError::UrlWhitespace, "{text:?}");
        }
    }

    #[test]
    fn urls_without_a_host_or_not_urls_at_all_are_refused() {
        assert!(refused("example.com/webhooks").to_string().contains("not an absolute URL"));
        assert!(refused("").to_string().contains("not an absolute URL"));
        assert!(refused("https://").to_string().contains("no host"));
        assert!(matches!(refused("https://exa mple.com"), WebhookError::UrlWhitespace));
        assert!(matches!(refused("https://[::1/"), WebhookError::UrlSyntax(_)));
        assert!(matches!(refused("https://example.com:99999/"), WebhookError::UrlSyntax(_)));
    }
}
