//! The agent's side of the channel: connect over mutual TLS, say hello with the last
//! delivery applied, apply deliveries in order and acknowledge each, send what the agent
//! has to say, and reconnect with backoff when the link drops.
//!
//! A delivery is acknowledged only after the handler has applied (and persisted) it, so a
//! crash between the two means the server sends it again — at least once, never lost.

use crate::identity::Identity;
use riposte_proto::{
    read_frame, write_frame, AgentToServer, Delivery, ServerToAgent, PROTOCOL_VERSION,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// What the agent does with what the link brings.
pub trait LinkHandler: Send + Sync + 'static {
    /// The highest delivery sequence number applied so far (persisted).
    fn last_applied(&self) -> u64;
    /// Applies one delivery and persists that it was applied.
    fn apply(&self, seq: u64, delivery: Delivery) -> impl Future<Output = ()> + Send;
    /// Messages to send right after each (re)connection: unacknowledged events and the
    /// latest task states.
    fn resend_on_connect(&self) -> Vec<AgentToServer>;
    /// The server has stored this event.
    fn event_acked(&self, event_id: &str);
    /// The link came up (`true`) or went down (`false`, with the reason).
    fn link_state(&self, up: bool, note: &str);
}

/// Why a link session ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server refused this device: {0}")]
    Refused(String),
    #[error(transparent)]
    Frame(#[from] riposte_proto::FrameError),
}

const PING_EVERY: Duration = Duration::from_secs(30);

/// Keeps the link up until `stop` turns true.
pub async fn run<H: LinkHandler>(
    identity: Identity,
    hostname: String,
    handler: Arc<H>,
    mut outgoing: mpsc::UnboundedReceiver<AgentToServer>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if *stop.borrow() {
            return;
        }
        let mut was_up = false;
        let result = session(
            &identity,
            &hostname,
            handler.as_ref(),
            &mut outgoing,
            &mut stop,
            &mut was_up,
        )
        .await;
        if was_up {
            // The link worked: start the backoff afresh rather than waiting long after a
            // single drop.
            backoff = Duration::from_millis(200);
        }
        match result {
            Ok(()) => return,
            Err(e) => {
                handler.link_state(false, &e.to_string());
                tracing::info!("link to the server down: {e}");
                if matches!(e, LinkError::Refused(_)) {
                    backoff = backoff.max(Duration::from_secs(30));
                }
            }
        }
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn session<H: LinkHandler>(
    identity: &Identity,
    hostname: &str,
    handler: &H,
    outgoing: &mut mpsc::UnboundedReceiver<AgentToServer>,
    stop: &mut watch::Receiver<bool>,
    was_up: &mut bool,
) -> Result<(), LinkError> {
    let tls = identity
        .tls_config()
        .map_err(|e| LinkError::Tls(e.to_string()))?;
    let addr = identity.channel_addr.clone();
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|source| LinkError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .unwrap_or_default();
    let name =
        rustls_pki_types::ServerName::try_from(host).map_err(|e| LinkError::Tls(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| LinkError::Tls(e.to_string()))?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    write_frame(
        &mut writer,
        &AgentToServer::Hello {
            device_id: identity.device_id,
            protocol: PROTOCOL_VERSION,
            last_applied_seq: handler.last_applied(),
            hostname: hostname.to_string(),
        },
    )
    .await?;
    match read_frame::<_, ServerToAgent>(&mut reader).await? {
        ServerToAgent::Welcome { .. } => {}
        ServerToAgent::Refused { reason } => return Err(LinkError::Refused(reason)),
        other => return Err(LinkError::Refused(unexpected_first_answer(&other))),
    }
    handler.link_state(true, "connected");
    *was_up = true;
    for m in handler.resend_on_connect() {
        write_frame(&mut writer, &m).await?;
    }
    let (frames_tx, mut frames) = mpsc::channel(8);
    let reader_task = tokio::spawn(async move {
        loop {
            let f = read_frame::<_, ServerToAgent>(&mut reader).await;
            let end = f.is_err();
            if frames_tx.send(f).await.is_err() || end {
                break;
            }
        }
    });
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let result = loop {
        tokio::select! {
            f = frames.recv() => {
                let frame = match f {
                    None => break Err(LinkError::Frame(riposte_proto::FrameError::Closed)),
                    Some(Err(e)) => break Err(e.into()),
                    Some(Ok(f)) => f,
                };
                match frame {
                    ServerToAgent::Deliver { seq, delivery } => {
                        if seq > handler.last_applied() {
                            handler.apply(seq, delivery).await;
                        }
                        write_frame(&mut writer, &AgentToServer::Ack { seq }).await?;
                    }
                    ServerToAgent::EventAck { event_id } => handler.event_acked(&event_id),
                    ServerToAgent::Pong | ServerToAgent::Welcome { .. } => {}
                    ServerToAgent::Refused { reason } => break Err(LinkError::Refused(reason)),
                }
            }
            m = outgoing.recv() => match m {
                Some(m) => write_frame(&mut writer, &m).await?,
                None => break Ok(()),
            },
            _ = ping.tick() => write_frame(&mut writer, &AgentToServer::Ping).await?,
            _ = stop.changed() => break Ok(()),
        }
    };
    reader_task.abort();
    result
}

/// Why a session was refused when the server's first frame was not an answer to hello.
/// Names the frame's kind only: the frame itself may carry the special password, and
/// this text is logged and stored as the link's state.
fn unexpected_first_answer(frame: &ServerToAgent) -> String {
    let kind = match frame {
        ServerToAgent::Welcome { .. } => "welcome",
        ServerToAgent::Deliver { .. } => "deliver",
        ServerToAgent::EventAck { .. } => "event_ack",
        ServerToAgent::Pong => "pong",
        ServerToAgent::Refused { .. } => "refused",
    };
    format!("unexpected first answer from the server: a {kind} frame instead of welcome")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unexpected_first_frame_is_named_without_its_content() {
        let settings = riposte_model::EffectiveSettings {
            threat_response: riposte_model::EffectiveValue {
                value: Default::default(),
                provenance: riposte_model::Provenance::Default,
            },
            sandbox_integration: riposte_model::EffectiveValue {
                value: Default::default(),
                provenance: riposte_model::Provenance::Default,
            },
        };
        let frame = ServerToAgent::Deliver {
            seq: 1,
            delivery: Delivery::Settings {
                settings,
                response_group: 2,
                special_password: Some("hunter2-very-secret".into()),
            },
        };
        let m = unexpected_first_answer(&frame);
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.contains("deliver frame"), "{m}");
    }
}
