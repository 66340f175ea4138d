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
    /// The server welcomed the link, naming the features it takes beyond the first
    /// protocol (before anything is sent again on the connection).
    fn welcomed(&self, _features: &[String]) {}
    /// A step of a certificate renewal, for the handler to store (crash-safe). On an
    /// error at `Issued` the link goes on with the current certificate, which the server
    /// still accepts.
    fn renewal(&self, step: Renewal<'_>) -> Result<(), String>;
}

/// The steps of a certificate renewal ([`LinkHandler::renewal`]).
#[derive(Debug, Clone, Copy)]
pub enum Renewal<'a> {
    /// The server issued this identity: keep it beside the current one.
    Issued(&'a Identity),
    /// The server accepted it on a connection: it is the device's identity from now on.
    Accepted(&'a Identity),
    /// The server took the current identity while a renewed one waited: it never
    /// accepted the renewed one, which is forgotten.
    Discarded,
}

/// How a link session ended without an error.
enum Ended {
    /// Asked to stop.
    Stopped,
    /// The certificate was renewed: reconnect with the new one at once.
    Renewed(Box<Identity>),
}

/// What a session does once the server has welcomed it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnWelcome {
    Nothing,
    /// It connected with the pending renewed identity: that is accepted.
    AcceptPending,
    /// It connected with the current identity while a renewed one was pending.
    DiscardPending,
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
    #[error(
        "the device certificate expired on {0} without being renewed (the device was away, \
         or could not store a renewal); enroll the agent again, in a new data directory \
         (`riposte agent --data NEW --server URL --ca FILE --enroll-token-file FILE`)"
    )]
    Expired(String),
    #[error(transparent)]
    Frame(#[from] riposte_proto::FrameError),
}

const PING_EVERY: Duration = Duration::from_secs(30);

/// Keeps the link up until `stop` turns true. `pending` is a renewed identity the
/// server issued that it has not accepted on a connection yet
/// ([`Identity::pending_renewal`]): tried first, the current one when it fails.
pub async fn run<H: LinkHandler>(
    mut identity: Identity,
    mut pending: Option<Identity>,
    hostname: String,
    handler: Arc<H>,
    mut outgoing: mpsc::UnboundedReceiver<AgentToServer>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    // After a pending identity failed to connect, the current one is tried once: if the
    // server takes it, it never accepted the pending one.
    let mut try_current = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let (using, on_welcome) = match &pending {
            Some(p) if !try_current => (p.clone(), OnWelcome::AcceptPending),
            Some(_) => (identity.clone(), OnWelcome::DiscardPending),
            None => (identity.clone(), OnWelcome::Nothing),
        };
        let mut was_up = false;
        let result = session(
            &using,
            on_welcome,
            &hostname,
            handler.as_ref(),
            &mut outgoing,
            &mut stop,
            &mut was_up,
        )
        .await;
        match (on_welcome, was_up) {
            (OnWelcome::AcceptPending, true) => {
                identity = using;
                pending = None;
            }
            (OnWelcome::DiscardPending, true) => pending = None,
            (OnWelcome::AcceptPending, false) => try_current = true,
            (OnWelcome::DiscardPending, false) => try_current = false,
            (OnWelcome::Nothing, _) => {}
        }
        if was_up {
            // The link worked: start the backoff afresh rather than waiting long after a
            // single drop.
            backoff = Duration::from_millis(200);
        }
        match result {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Renewed(renewed)) => {
                handler.link_state(false, "reconnecting with the renewed device certificate");
                pending = Some(*renewed);
                try_current = false;
                continue;
            }
            // The renewed identity was refused: the current one at once.
            Err(e) if try_current && on_welcome == OnWelcome::AcceptPending => {
                let note = format!(
                    "the renewed device certificate did not connect ({e}); trying the current one"
                );
                tracing::warn!("{note}");
                handler.link_state(false, &note);
                continue;
            }
            Err(e) => {
                handler.link_state(false, &e.to_string());
                tracing::info!("link to the server down: {e}");
                if matches!(e, LinkError::Refused(_) | LinkError::Expired(_)) {
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
    on_welcome: OnWelcome,
    hostname: &str,
    handler: &H,
    outgoing: &mut mpsc::UnboundedReceiver<AgentToServer>,
    stop: &mut watch::Receiver<bool>,
    was_up: &mut bool,
) -> Result<Ended, LinkError> {
    // Expired by this device's clock: the server, whose clock judges, is asked anyway (a
    // clock ahead must not make the device give up); if it refuses, with a bare TLS
    // alert, the error says what to do.
    let expired_here = identity
        .certificate_expires_ms()
        .filter(|&at| at <= crate::daemon::now_ms());
    if let Some(at) = expired_here {
        tracing::warn!(
            "the device certificate expired on {} by this device's clock; trying the server anyway",
            riposte_model::time::utc(at)
        );
    }
    let opened = async {
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
        let name = rustls_pki_types::ServerName::try_from(host)
            .map_err(|e| LinkError::Tls(e.to_string()))?;
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
                renews_certificate: true,
            },
        )
        .await?;
        match read_frame::<_, ServerToAgent>(&mut reader).await? {
            ServerToAgent::Welcome { features, .. } => handler.welcomed(&features),
            ServerToAgent::Refused { reason } => return Err(LinkError::Refused(reason)),
            other => return Err(LinkError::Refused(unexpected_first_answer(&other))),
        }
        Ok((reader, writer))
    }
    .await;
    let (mut reader, mut writer) = match (opened, expired_here) {
        (Ok(halves), _) => halves,
        // Nothing reached: the certificate was not judged.
        (Err(e @ LinkError::Connect { .. }), _) => return Err(e),
        (Err(_), Some(at)) => return Err(LinkError::Expired(riposte_model::time::utc(at))),
        (Err(e), None) => return Err(e),
    };
    match on_welcome {
        OnWelcome::Nothing => {}
        OnWelcome::AcceptPending => {
            tracing::info!("the server accepted the renewed device certificate");
            if let Err(e) = handler.renewal(Renewal::Accepted(identity)) {
                // Kept pending on disk (`renewal.json`): stored at the next welcome or
                // renewal, or used again at the next start.
                tracing::warn!("cannot store the accepted device certificate yet: {e}");
            }
        }
        OnWelcome::DiscardPending => {
            tracing::warn!(
                "the server took the current device certificate, not the renewed one: the renewed one is dropped"
            );
            if let Err(e) = handler.renewal(Renewal::Discarded) {
                tracing::warn!("cannot drop the renewed device certificate: {e}");
            }
        }
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
    // The key of a certificate request sent on this connection, until its answer.
    let mut new_key: Option<String> = None;
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
                    ServerToAgent::RenewCertificate => {
                        match crate::identity::key_and_request(hostname) {
                            Ok((key, csr_pem)) => {
                                new_key = Some(key);
                                write_frame(&mut writer, &AgentToServer::CertificateRequest { csr_pem }).await?;
                            }
                            Err(e) => tracing::warn!("cannot make a key to renew the device certificate: {e}"),
                        }
                    }
                    ServerToAgent::Certificate { cert_pem } => {
                        let Some(key) = new_key.take() else {
                            tracing::warn!("the server sent a certificate this agent did not ask for; ignored");
                            continue;
                        };
                        let stored = identity
                            .renewed(key, cert_pem)
                            .map_err(|e| e.to_string())
                            .and_then(|renewed| {
                                handler.renewal(Renewal::Issued(&renewed))?;
                                Ok(renewed)
                            });
                        match stored {
                            Ok(renewed) => {
                                tracing::info!("the server issued a renewed device certificate; reconnecting with it");
                                break Ok(Ended::Renewed(Box::new(renewed)));
                            }
                            Err(e) => tracing::warn!("keeping the current device certificate: {e}"),
                        }
                    }
                }
            }
            m = outgoing.recv() => match m {
                Some(m) => write_frame(&mut writer, &m).await?,
                None => break Ok(Ended::Stopped),
            },
            _ = ping.tick() => write_frame(&mut writer, &AgentToServer::Ping).await?,
            _ = stop.changed() => break Ok(Ended::Stopped),
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
        ServerToAgent::RenewCertificate => "renew_certificate",
        ServerToAgent::Certificate { .. } => "certificate",
    };
    format!("unexpected first answer from the server: a {kind} frame instead of welcome")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Notes(std::sync::Mutex<Vec<String>>);

    impl LinkHandler for Notes {
        fn last_applied(&self) -> u64 {
            0
        }
        async fn apply(&self, _: u64, _: Delivery) {}
        fn resend_on_connect(&self) -> Vec<AgentToServer> {
            Vec::new()
        }
        fn event_acked(&self, _: &str) {}
        fn link_state(&self, _: bool, note: &str) {
            self.0.lock().unwrap().push(note.to_string());
        }
        fn renewal(&self, _: Renewal<'_>) -> Result<(), String> {
            Err("not in this test".into())
        }
    }

    /// A certificate expired by the device's clock is still tried (the server's clock
    /// judges); when the server refuses it (with a bare TLS alert, here a peer that
    /// closes), the error says it expired and what to do.
    #[tokio::test]
    async fn an_expired_certificate_says_to_enroll_again() {
        let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refusing_addr = refusing.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for conn in refusing.incoming() {
                drop(conn);
            }
        });
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 3, 4);
        let cert = params.self_signed(&key).unwrap();
        let identity = Identity {
            device_id: 1,
            server_url: "https://127.0.0.1:1".into(),
            channel_addr: refusing_addr,
            ca_pem: cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        assert_eq!(identity.certificate_expires_ms(), Some(1_614_816_000_000));
        let notes = Arc::new(Notes::default());
        let (_tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let link = tokio::spawn(run(identity, None, "h".into(), notes.clone(), rx, stop));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while notes.0.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(true);
        link.await.unwrap();
        let notes = notes.0.lock().unwrap();
        assert!(
            notes[0].contains("expired on 2021-03-04 00:00:00 UTC")
                && notes[0].contains("enroll the agent again"),
            "{notes:?}"
        );
    }

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
