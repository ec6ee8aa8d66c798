//! User-interactive authentication (spec: Client-Server API, "User-Interactive
//! Authentication API"): sessions that remember which stages a client has
//! completed, for registration, password changes, deactivation and device deletion.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use rand::{Rng, distributions::Alphanumeric};
use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::{
    Services,
    error::{Error, ErrorKind, Result},
};

/// How long an unfinished session is kept.
const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 60);

#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, (Vec<String>, Instant)>>,
}

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";

fn new_session_id() -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect()
}

fn challenge(session: &str, flows: &[Vec<&str>], completed: &[String], failure: Option<Error>) -> Error {
    let mut body = Map::new();
    body.insert("flows".into(), json!(flows.iter().map(|stages| json!({ "stages": stages })).collect::<Vec<_>>()));
    body.insert("params".into(), json!({}));
    body.insert("session".into(), json!(session));
    if !completed.is_empty() {
        body.insert("completed".into(), json!(completed));
    }
    let mut message = String::new();
    if let Some(failure) = failure {
        body.insert("errcode".into(), json!(failure.errcode()));
        body.insert("error".into(), json!(failure.message));
        message = failure.message;
    }
    let mut error = Error::new(ErrorKind::UserInteractive, message);
    error.body = Some(body);
    error
}

impl Sessions {
    /// Runs the stage in `auth` and succeeds once one of `flows` is complete.
    /// `user` is whose password `m.login.password` checks.
    pub async fn check(
        &self,
        services: &Services,
        auth: Option<&Value>,
        flows: &[Vec<&str>],
        user: Option<&UserId>,
    ) -> Result<()> {
        let Some(auth) = auth.filter(|a| a.is_object()) else {
            let session = new_session_id();
            self.store(&session, Vec::new());
            return Err(challenge(&session, flows, &[], None));
        };
        let session = auth.get("session").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(new_session_id);
        let mut completed = self.completed(&session);
        let Some(stage) = auth.get("type").and_then(Value::as_str) else {
            self.store(&session, completed.clone());
            return Err(challenge(&session, flows, &completed, None));
        };
        if !flows.iter().any(|f| f.contains(&stage)) {
            return Err(challenge(
                &session,
                flows,
                &completed,
                Some(Error::bad_json(format!("authentication type {stage} is not offered here"))),
            ));
        }

        let outcome = match stage {
            DUMMY => Ok(()),
            REGISTRATION_TOKEN => {
                let token = auth.get("token").and_then(Value::as_str).unwrap_or_default();
                if services.config.registration.tokens.iter().any(|t| t == token) {
                    Ok(())
                } else {
                    Err(Error::new(ErrorKind::Unauthorized, "registration token is invalid"))
                }
            }
            PASSWORD => self.check_password(services, auth, user).await,
            other => Err(Error::bad_json(format!("authentication type {other} is not supported"))),
        };
        if let Err(failure) = outcome {
            self.store(&session, completed.clone());
            return Err(challenge(&session, flows, &completed, Some(failure)));
        }

        if !completed.iter().any(|c| c == stage) {
            completed.push(stage.to_owned());
        }
        let done = flows.iter().any(|flow| flow.iter().all(|s| completed.iter().any(|c| c == s)));
        if done {
            self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&session);
            Ok(())
        } else {
            self.store(&session, completed.clone());
            Err(challenge(&session, flows, &completed, None))
        }
    }

    async fn check_password(&self, services: &Services, auth: &Value, user: Option<&UserId>) -> Result<()> {
        let Some(user) = user else {
            return Err(Error::forbidden("password authentication needs a logged-in user"));
        };
        let claimed = auth.pointer("/identifier/user").or_else(|| auth.get("user")).and_then(Value::as_str);
        if let Some(claimed) = claimed {
            let claimed = services.users.parse_local_user(claimed)?;
            if claimed != user {
                return Err(Error::forbidden("the identifier does not match the logged-in user"));
            }
        }
        let password =
            auth.get("password").and_then(Value::as_str).ok_or_else(|| Error::bad_json("auth.password is missing"))?;
        services.users.check_password(user, password).await
    }

    fn completed(&self, session: &str) -> Vec<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(session).map(|(c, _)| c.clone()).unwrap_or_default()
    }

    fn store(&self, session: &str, completed: Vec<String>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, (_, created)| now.duration_since(*created) < SESSION_LIFETIME);
        sessions.insert(session.to_owned(), (completed, now));
    }
}
