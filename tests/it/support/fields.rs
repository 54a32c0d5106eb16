//! Token-request bodies parsed into one shape, whatever their wire format.
//!
//! The seed providers disagree on format (Baselime and api-v1 send JSON, BACE multipart,
//! Apicbase and RFC 6749 §4 form-urlencoded) but agree on the checks: required names, no unknown
//! or repeated names (RFC 6749 §3.2), string values. Each fake parses into [`Fields`] and then
//! asks for exactly the names its document lists.

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use serde_json::Value;

use super::http::Reject;

/// Names whose values never appear in records or messages.
const SECRET_NAMES: &[&str] = &[
    "client_secret",
    "clientSecret",
    "password",
    "refresh_token",
    "refreshToken",
    "code",
    "code_verifier",
    "token",
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    map: BTreeMap<String, String>,
}

impl Fields {
    /// `application/x-www-form-urlencoded` (RFC 6749 Appendix B).
    pub fn from_form(body: &[u8]) -> Result<Self, Reject> {
        let mut fields = Fields::default();
        for (k, v) in form_urlencoded::parse(body) {
            fields.insert(k.into_owned(), v.into_owned())?;
        }
        Ok(fields)
    }

    /// A JSON object of strings. Names in `numbers_ok` may also be JSON numbers (api-v1 shows
    /// `"client_id": YOUR_CLIENT_ID` unquoted, and numeric client ids are common there).
    pub fn from_json(body: &[u8], numbers_ok: &[&str]) -> Result<Self, Reject> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Reject::invalid_request(format!("body is not JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(Reject::invalid_request("body is not a JSON object"));
        };
        let mut fields = Fields::default();
        for (k, v) in object {
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) if numbers_ok.contains(&k.as_str()) => n.to_string(),
                other => {
                    return Err(Reject::invalid_request(format!(
                        "field {k} must be a string, got {}",
                        kind(&other)
                    )));
                }
            };
            fields.insert(k, v)?;
        }
        Ok(fields)
    }

    /// `multipart/form-data` (RFC 7578), text parts only.
    pub async fn from_multipart(content_type: &str, body: Bytes) -> Result<Self, Reject> {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| Reject::invalid_request(format!("no multipart boundary: {e}")))?;
        let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut fields = Fields::default();
        loop {
            let field = multipart
                .next_field()
                .await
                .map_err(|e| Reject::invalid_request(format!("bad multipart body: {e}")))?;
            let Some(field) = field else { break };
            let Some(name) = field.name().map(str::to_owned) else {
                return Err(Reject::invalid_request("multipart part without a name"));
            };
            if field.file_name().is_some() {
                return Err(Reject::invalid_request(format!("part {name} is a file")));
            }
            let text = field
                .text()
                .await
                .map_err(|e| Reject::invalid_request(format!("part {name} unreadable: {e}")))?;
            fields.insert(name, text)?;
        }
        Ok(fields)
    }

    fn insert(&mut self, name: String, value: String) -> Result<(), Reject> {
        if self.map.contains_key(&name) {
            return Err(Reject::invalid_request(format!("field {name} repeated")));
        }
        self.map.insert(name, value);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// A present, non-empty value.
    pub fn require(&self, name: &str) -> Result<&str, Reject> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            Some(_) => Err(Reject::invalid_request(format!("field {name} is empty"))),
            None => Err(Reject::invalid_request(format!("field {name} is missing"))),
        }
    }

    /// Every name in `required` present and non-empty, and nothing outside `required + optional`.
    pub fn expect(&self, required: &[&str], optional: &[&str]) -> Result<(), Reject> {
        for name in required {
            self.require(name)?;
        }
        for name in self.map.keys() {
            if !required.contains(&name.as_str()) && !optional.contains(&name.as_str()) {
                return Err(Reject::invalid_request(format!("unexpected field {name}")));
            }
        }
        Ok(())
    }

    /// All names and values, with secret values replaced by `[redacted]`.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        self.map
            .iter()
            .map(|(k, v)| {
                let v = if SECRET_NAMES.contains(&k.as_str()) {
                    "[redacted]".to_owned()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Fields {
    /// Client authentication in the body (RFC 6749 §2.3.1, second form): a wrong id or secret is
    /// `invalid_client`.
    pub fn check_client(
        &self,
        id_field: &str,
        secret_field: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<(), Reject> {
        let id = self.require(id_field)?;
        let secret = self.require(secret_field)?;
        if id == client_id && secret == client_secret {
            Ok(())
        } else {
            Err(Reject::invalid_client())
        }
    }
}
