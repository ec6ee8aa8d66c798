//! Email: the SMTP transport, verification emails of `requestToken`, and
//! notification emails for `email` pushers.
//!
//! Every email is sent from a background task with retries, so a slow or
//! failing SMTP server never delays a request. Notification emails come
//! from a task that looks once a second for push actions that stayed unread
//! for `email.notification_delay_secs`, and sends at most one email per user
//! and room per `email.notification_period_secs`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Mailbox, MultiPart,
        header::{HeaderName, HeaderValue},
    },
    transport::smtp::authentication::Credentials,
};
use ruma::{RoomId, events::StateEventType};
use tokio::sync::watch;

use crate::{
    Services,
    config::{Config, EmailConfig},
    storage::{self, push::EmailCandidate},
};

/// Push actions read per look.
const CANDIDATES_PER_LOOK: i64 = 500;
/// Messages quoted in one notification email.
const MESSAGES_PER_EMAIL: usize = 5;
/// Delay before the first retry of a failed send; each retry doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The HTML tags that the spec allows in `formatted_body`, less `img`: an
/// email shows no images, so no remote image can track its reader.
const ALLOWED_TAGS: &[&str] = &[
    "font",
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "details",
    "summary",
];

/// The SMTP transport of the configured server, or `None` while email is off.
#[derive(Clone)]
pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Option<Mailbox>,
    max_attempts: u32,
}

impl Mailer {
    /// Builds the transport. A bad host name or `from` address turns email
    /// off, with an error in the log.
    pub fn new(config: &EmailConfig) -> Self {
        let off = Self { transport: None, from: None, max_attempts: 0 };
        if config.smtp_host.is_empty() {
            return off;
        }
        let from = match config.from.parse::<Mailbox>() {
            Ok(from) => from,
            Err(err) => {
                tracing::error!(error = %err, "email.from is not a valid mailbox; email is off");
                return off;
            }
        };
        let builder = match config.smtp_security.as_str() {
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.smtp_host),
            "plain" => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.smtp_host)),
            _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.smtp_host),
        };
        let mut builder = match builder {
            Ok(builder) => builder.port(config.smtp_port).timeout(Some(Duration::from_secs(30))),
            Err(err) => {
                tracing::error!(error = %err, host = %config.smtp_host, "invalid SMTP settings; email is off");
                return off;
            }
        };
        if let Some(user) = &config.smtp_username {
            builder =
                builder.credentials(Credentials::new(user.clone(), config.smtp_password.clone().unwrap_or_default()));
        }
        tracing::info!(host = %config.smtp_host, port = config.smtp_port, security = %config.smtp_security, "email enabled");
        Self { transport: Some(builder.build()), from: Some(from), max_attempts: config.max_attempts.max(1) }
    }

    pub fn is_enabled(&self) -> bool {
        self.transport.is_some()
    }

    /// Queues an email with a plain-text and an HTML part and returns at once.
    /// `purpose` names the kind of email in logs, which never show addresses'
    /// contents beyond the recipient.
    pub fn send_later(
        &self,
        to: &str,
        subject: &str,
        text: String,
        html: String,
        unsubscribe: Option<String>,
        purpose: &'static str,
    ) {
        let (Some(transport), Some(from)) = (self.transport.clone(), self.from.clone()) else {
            tracing::warn!(purpose, "email is not configured; email not sent");
            return;
        };
        let to_mailbox = match to.parse::<Mailbox>() {
            Ok(to) => to,
            Err(err) => {
                tracing::warn!(error = %err, purpose, "invalid recipient address; email not sent");
                return;
            }
        };
        let mut builder = Message::builder().from(from).to(to_mailbox).subject(subject);
        if let Some(link) = unsubscribe {
            builder = builder
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), format!("<{link}>")))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let message = match builder.multipart(MultiPart::alternative_plain_html(text, html)) {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(error = %err, purpose, "could not build an email; email not sent");
                return;
            }
        };
        let max_attempts = self.max_attempts;
        tokio::spawn(async move {
            let mut delay = FIRST_RETRY;
            for attempt in 1..=max_attempts {
                match transport.send(message.clone()).await {
                    Ok(_) => {
                        tracing::info!(purpose, "email sent");
                        return;
                    }
                    Err(err) if attempt < max_attempts => {
                        tracing::warn!(error = %err, purpose, attempt, retry_in_secs = delay.as_secs(), "sending an email failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(err) => {
                        tracing::error!(error = %err, purpose, attempts = attempt, "sending an email failed; email dropped");
                    }
                }
            }
        });
    }
}

/// The base URL of links in emails: `public_baseurl`, or `http://` and the
/// client listener address, as in `/.well-known/matrix/client`.
pub fn base_url(config: &Config) -> String {
    config
        .public_baseurl
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen.client))
        .trim_end_matches('/')
        .to_owned()
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Sanitizes a message's `formatted_body` for an email: only the spec's
/// allowed tags and attributes survive, scripts and styles lose their
/// content, images are dropped, and links may only use http, https and mailto.
pub fn sanitize_html(html: &str) -> String {
    let mut attributes: std::collections::HashMap<&str, std::collections::HashSet<&str>> = Default::default();
    attributes.insert("font", ["color", "data-mx-bg-color", "data-mx-color"].into());
    attributes.insert("span", ["data-mx-bg-color", "data-mx-color", "data-mx-spoiler"].into());
    attributes.insert("a", ["href", "target"].into());
    attributes.insert("ol", ["start"].into());
    attributes.insert("code", ["class"].into());
    ammonia::Builder::default()
        .tags(ALLOWED_TAGS.iter().copied().collect())
        .tag_attributes(attributes)
        .generic_attributes(Default::default())
        .url_schemes(["http", "https", "mailto"].into())
        .link_rel(Some("noopener noreferrer"))
        .clean(html)
        .to_string()
}

/// Starts the task that sends notification emails. It ends when `stop` turns true.
pub fn spawn_notifier(services: Arc<Services>, mut stop: watch::Receiver<bool>) {
    if !services.mailer.is_enabled() {
        return;
    }
    tokio::spawn(async move {
        loop {
            if let Err(err) = send_due_notifications(&services).await {
                tracing::warn!(error = %err, "could not look for notification emails; retrying in a second");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => break,
            }
        }
    });
}

/// Sends one email per user and room for push actions that stayed unread long enough.
async fn send_due_notifications(services: &Arc<Services>) -> crate::error::Result<()> {
    let config = &services.config.email;
    let now = storage::now_ms();
    let before = now - (config.notification_delay_secs as i64) * 1000;
    let period_start = now - (config.notification_period_secs as i64) * 1000;
    // Messages that waited longer than this (the server was down) get no email.
    let oldest = now - (services.config.push.max_delivery_age_secs as i64).saturating_mul(1000);
    let candidates =
        storage::push::email_candidates(&services.db.pool, before, oldest, period_start, CANDIDATES_PER_LOOK).await?;
    if candidates.is_empty() {
        return Ok(());
    }
    let mut conversations: BTreeMap<(String, String, String), Vec<EmailCandidate>> = BTreeMap::new();
    for candidate in candidates {
        let key =
            (candidate.pusher.user_id.clone(), candidate.pusher.pushkey.clone(), candidate.action.room_id.clone());
        conversations.entry(key).or_default().push(candidate);
    }
    for ((user_id, address, room_id), candidates) in conversations {
        let last_stream = candidates.iter().map(|c| c.action.stream_ordering).max().unwrap_or(0);
        // The email is recorded before it is sent, so a failing SMTP server
        // leads to retries of this email, never to a second email.
        let (user, room) = (user_id.clone(), room_id.clone());
        services
            .db
            .writer
            .write(move |txn| {
                Box::pin(async move {
                    storage::push::record_email_sent(&mut txn.conn, &user, &room, now, last_stream).await?;
                    Ok(())
                })
            })
            .await?;
        let token = candidates[0].pusher.unsubscribe_token.clone().unwrap_or_default();
        let email = compose(services, &room_id, &candidates, &token).await?;
        services.mailer.send_later(
            &address,
            &email.subject,
            email.text,
            email.html,
            Some(email.unsubscribe),
            "notification",
        );
        tracing::info!(user_id = %user_id, room_id = %room_id, messages = candidates.len(), "notification email queued");
    }
    Ok(())
}

struct Email {
    subject: String,
    text: String,
    html: String,
    unsubscribe: String,
}

/// A quoted message of a notification email.
struct Quote {
    sender: String,
    text: String,
    html: String,
}

async fn compose(
    services: &Services,
    room_id: &str,
    candidates: &[EmailCandidate],
    token: &str,
) -> crate::error::Result<Email> {
    let room_id = RoomId::parse(room_id).map_err(|e| crate::error::Error::internal("composing an email", e))?;
    let room = services.rooms.state(&room_id).await?;
    let display_name = |user: &str| {
        room.get(&StateEventType::RoomMember, user)
            .and_then(|m| m.content_str("displayname"))
            .unwrap_or_else(|| user.to_owned())
    };
    let ids: Vec<String> =
        candidates.iter().rev().take(MESSAGES_PER_EMAIL).map(|c| c.action.event_id.clone()).collect();
    let mut events = storage::events::get_many(&services.db.pool, &ids).await?;
    events.sort_by_key(|e| e.stream);

    let mut quotes = Vec::new();
    for event in &events {
        let content = event.pdu.content_value();
        let body = content["body"].as_str().unwrap_or_default();
        let text = match event.pdu.kind.to_string().as_str() {
            "m.room.message" if !body.is_empty() => body.to_owned(),
            "m.room.encrypted" => "(an encrypted message)".to_owned(),
            "m.room.member" => "(an invitation)".to_owned(),
            _ => "(a new event)".to_owned(),
        };
        let html = match (content["format"].as_str(), content["formatted_body"].as_str()) {
            (Some("org.matrix.custom.html"), Some(formatted)) => sanitize_html(formatted),
            _ => escape(&text).replace('\n', "<br>"),
        };
        quotes.push(Quote { sender: display_name(event.pdu.sender.as_str()), text, html });
    }

    let room_name = room
        .get(&StateEventType::RoomName, "")
        .and_then(|e| e.content_str("name"))
        .filter(|n| !n.is_empty())
        .or_else(|| room.get(&StateEventType::RoomCanonicalAlias, "").and_then(|e| e.content_str("alias")));
    let first_sender = quotes.first().map(|q| q.sender.clone()).unwrap_or_default();
    let conversation = room_name.clone().unwrap_or_else(|| format!("your conversation with {first_sender}"));
    let app = &services.config.email.app_name;
    let subject = match &room_name {
        Some(name) => format!("[{app}] New message from {first_sender} in {name}"),
        None => format!("[{app}] New message from {first_sender}"),
    };
    let base = base_url(&services.config);
    let unsubscribe = format!("{base}/_lattice/email/unsubscribe?token={token}");

    let mut text = format!("You have unread messages in {conversation}:\n\n");
    let mut html = format!("<p>You have unread messages in <b>{}</b>:</p>\n", escape(&conversation));
    for quote in &quotes {
        text.push_str(&format!("{} wrote:\n{}\n\n", quote.sender, quote.text));
        html.push_str(&format!(
            "<p><b>{}</b> wrote:</p>\n<blockquote>{}</blockquote>\n",
            escape(&quote.sender),
            quote.html
        ));
    }
    text.push_str(&format!("To stop these emails, open {unsubscribe}\n"));
    html.push_str(&format!("<p><a href=\"{}\">Unsubscribe</a> from these emails.</p>\n", escape(&unsubscribe)));
    Ok(Email { subject, text, html, unsubscribe })
}
