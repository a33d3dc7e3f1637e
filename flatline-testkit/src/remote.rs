//! A Flatline app talking to a running server over real HTTP, and a scripted browser for the identity provider's
//! front channel. Used by the end-to-end tests (real `oidc-provider`, the built-in development IdP) and by the
//! `register` example.
//!
//! The browser keeps cookies (a real OP's login needs them) and follows redirects until one points at the
//! app's redirect URI, which it never requests: it returns the callback's `code`, `state` and `iss` instead.

use std::time::Duration;

use flatline_core::random::SecureRandom;
use serde_json::{Value, json};

use crate::client::{SimClient, UsernameForm, pkce};

/// An HTTP answer: status and body (JSON when it parses, else the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Value,
}

impl Answer {
    /// The Flatline error `code`, or "".
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// The app's half of a verification: PKCE verifier, state, and the started session.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// PKCE verifier (the challenge went to the server).
    pub verifier: String,
    /// OAuth `state` the app chose.
    pub state: String,
    /// The server's session JSON (`id`, `authorizationEndpoint`, `clientId`, `requestUri`, …).
    pub session: Value,
}

impl Attempt {
    /// The session id.
    pub fn id(&self) -> &str {
        self.session["id"].as_str().unwrap_or_default()
    }
}

/// What the IdP sent back to the redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// Authorization code.
    pub code: String,
    /// Echoed state.
    pub state: String,
    /// RFC 9207 issuer, when sent.
    pub iss: Option<String>,
}

/// Errors of the scripted flow, as text (tests print them).
pub type FlowResult<T> = Result<T, String>;

/// A Flatline server at `base` (e.g. `http://127.0.0.1:8080`).
#[derive(Debug, Clone)]
pub struct Remote {
    base: String,
    http: reqwest::Client,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn answer(r: reqwest::Response) -> FlowResult<Answer> {
    let status = r.status().as_u16();
    let text = r.text().await.map_err(err)?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok(Answer { status, body })
}

impl Remote {
    /// A client for the server at `base`, with generous timeouts (CI machines are slow and shared).
    pub fn new(base: &str) -> FlowResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(err)?;
        Ok(Remote {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` with an optional `Authorization` header.
    pub async fn get(&self, path: &str, auth: Option<&str>) -> FlowResult<Answer> {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        answer(r.send().await.map_err(err)?).await
    }

    /// `method path` with a JSON body and an optional `Authorization` header.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: &Value,
    ) -> FlowResult<Answer> {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        answer(r.send().await.map_err(err)?).await
    }

    /// `GET /v1/verification`: the providers list.
    pub async fn providers(&self) -> FlowResult<Vec<Value>> {
        let a = self.get("/v1/verification", None).await?;
        if a.status != 200 {
            return Err(format!(
                "GET /v1/verification answered {}: {}",
                a.status, a.body
            ));
        }
        Ok(a.body["providers"].as_array().cloned().unwrap_or_default())
    }

    /// `POST /v1/verification/session` with a fresh PKCE pair and state.
    pub async fn start(
        &self,
        provider: &str,
        redirect_uri: &str,
        login_hint: Option<&str>,
        rng: &dyn SecureRandom,
    ) -> FlowResult<(Answer, Attempt)> {
        let (verifier, challenge) = pkce(rng);
        let state = format!("st-{}", &verifier[..12]);
        let mut body = json!({"providerId": provider, "codeChallenge": challenge, "state": state, "redirectUri": redirect_uri});
        if let Some(hint) = login_hint {
            body["loginHint"] = json!(hint);
        }
        let a = self
            .send_json(
                reqwest::Method::POST,
                "/v1/verification/session",
                None,
                &body,
            )
            .await?;
        let session = if a.status == 200 {
            a.body.clone()
        } else {
            Value::Null
        };
        Ok((
            a,
            Attempt {
                verifier,
                state,
                session,
            },
        ))
    }

    /// `PATCH /v1/verification/session/{id}` with the callback's values.
    pub async fn verify(&self, attempt: &Attempt, callback: &Callback) -> FlowResult<Answer> {
        let mut body = json!({"code": callback.code, "codeVerifier": attempt.verifier, "state": callback.state});
        if let Some(iss) = &callback.iss {
            body["iss"] = json!(iss);
        }
        self.send_json(
            reqwest::Method::PATCH,
            &format!("/v1/verification/session/{}", attempt.id()),
            None,
            &body,
        )
        .await
    }

    /// `POST /v1/registration` for `client` with a full key set.
    pub async fn register(
        &self,
        client: &SimClient,
        principal: &str,
        session_id: &str,
        rng: &dyn SecureRandom,
    ) -> FlowResult<Answer> {
        self.send_json(
            reqwest::Method::POST,
            "/v1/registration",
            Some(&client.registration_auth(principal)),
            &client.registration_body(session_id, rng),
        )
        .await
    }

    /// `GET /v1/accounts/whoami` as `client`.
    pub async fn whoami(&self, client: &SimClient) -> FlowResult<Answer> {
        self.get(
            "/v1/accounts/whoami",
            Some(&client.basic_auth(UsernameForm::Dot)),
        )
        .await
    }

    /// The whole flow as a new device: start, browser, verify, register. Returns the registered client (with its
    /// ACI and PNI set) and the registration JSON. Any non-success answer is an error naming the step.
    pub async fn register_through(
        &self,
        browser: &Browser,
        provider: &str,
        redirect_uri: &str,
        login_hint: Option<&str>,
        rng: &dyn SecureRandom,
    ) -> FlowResult<(SimClient, Value)> {
        let (a, attempt) = self.start(provider, redirect_uri, login_hint, rng).await?;
        if a.status != 200 {
            return Err(format!("start answered {}: {}", a.status, a.body));
        }
        let callback = browser.authorize(&attempt.session, redirect_uri).await?;
        if callback.state != attempt.state {
            return Err("the callback's state differs from the one sent".into());
        }
        let v = self.verify(&attempt, &callback).await?;
        if v.status != 200 {
            return Err(format!("verify answered {}: {}", v.status, v.body));
        }
        let principal = v.body["principal"]
            .as_str()
            .ok_or("verify returned no principal")?
            .to_owned();
        let mut client = SimClient::new(rng);
        let r = self
            .register(&client, &principal, attempt.id(), rng)
            .await?;
        if r.status != 200 {
            return Err(format!("register answered {}: {}", r.status, r.body));
        }
        client.aci = r.body["uuid"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or("registration returned no uuid")?;
        client.pni = r.body["pni"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or("registration returned no pni")?;
        Ok((client, r.body))
    }
}

/// A scripted browser: a cookie jar and redirects followed up to the app's redirect URI.
pub struct Browser {
    http: reqwest::Client,
}

impl Browser {
    /// A browser that stops at any URL starting with one of `stop_at` (the app's redirect URIs).
    pub fn new(stop_at: Vec<String>) -> FlowResult<Self> {
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let url = attempt.url().as_str();
            if stop_at.iter().any(|p| url.starts_with(p.as_str())) {
                attempt.stop()
            } else if attempt.previous().len() > 10 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(policy)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(err)?;
        Ok(Browser { http })
    }

    /// Opens the session's authorization URL (`authorizationEndpoint?client_id&request_uri`) and returns what
    /// the IdP sent to `redirect_uri`. An error answer from the IdP (`error=` in the callback) is an error.
    pub async fn authorize(&self, session: &Value, redirect_uri: &str) -> FlowResult<Callback> {
        let endpoint = session["authorizationEndpoint"]
            .as_str()
            .ok_or("session has no authorizationEndpoint")?;
        let client_id = session["clientId"]
            .as_str()
            .ok_or("session has no clientId")?;
        let request_uri = session["requestUri"]
            .as_str()
            .ok_or("session has no requestUri")?;
        let url = reqwest::Url::parse_with_params(
            endpoint,
            [("client_id", client_id), ("request_uri", request_uri)],
        )
        .map_err(err)?;
        let response = self.http.get(url).send().await.map_err(err)?;
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "the authorization flow ended at {} ({}) instead of redirecting to {redirect_uri}",
                    response.url(),
                    response.status()
                )
            })?;
        let url = response.url().join(&location).map_err(err)?;
        if !url.as_str().starts_with(redirect_uri) {
            return Err(format!("redirected to {url}, not to {redirect_uri}"));
        }
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if let Some(e) = param("error") {
            return Err(format!(
                "the IdP answered error={e}: {}",
                param("error_description").unwrap_or_default()
            ));
        }
        Ok(Callback {
            code: param("code").ok_or("the callback has no code")?,
            state: param("state").ok_or("the callback has no state")?,
            iss: param("iss"),
        })
    }
}
