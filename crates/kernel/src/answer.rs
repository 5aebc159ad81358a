//! Encoding the messages that answer one request: its reply and its IOPub children (status,
//! execute_input, outputs). A request gets five or more of them, so what they share — the
//! serialized parent header, the routing identities — is prepared once per request instead of
//! being cloned into a `Message` and serialized again for each.

use kernelgate_wire::{iopub_topic, json, Message, Session, DELIMITER};
use serde::Serialize;

/// The frames of one signed message.
pub(crate) type Frames = Vec<Vec<u8>>;

/// The messages answering one request.
pub(crate) struct Answering {
    session: Session,
    kernel_id: String,
    /// The request's routing identities: where its reply goes.
    identities: Frames,
    /// The request's header as JSON: the parent header of every answer.
    parent_header: Vec<u8>,
}

impl Answering {
    /// Prepares the answers to `request`, published under `kernel_id`'s IOPub topics.
    pub(crate) fn new(
        session: &Session,
        kernel_id: &str,
        request: &Message,
    ) -> kernelgate_wire::Result<Answering> {
        Ok(Answering {
            session: session.clone(),
            kernel_id: kernel_id.to_owned(),
            identities: request.identities.clone(),
            parent_header: json::to_vec(&request.header)?,
        })
    }

    /// The reply of type `msg_type`, routed back to the requester.
    pub(crate) fn reply<C: Serialize + ?Sized>(
        &self,
        msg_type: &str,
        content: &C,
    ) -> Option<Frames> {
        self.to_requester(msg_type, content)
            .map(|(_, frames)| frames)
    }

    /// A message of type `msg_type` routed to the requester (a reply, or an input_request on
    /// stdin, whose ROUTER knows the same routing id), with its msg_id.
    pub(crate) fn to_requester<C: Serialize + ?Sized>(
        &self,
        msg_type: &str,
        content: &C,
    ) -> Option<(String, Frames)> {
        self.encode(self.identities.clone(), msg_type, content)
    }

    /// Whether `identities` (of a message on a ROUTER socket) are the requester's: the stdin
    /// prompt went to them, and only they may answer it.
    pub(crate) fn is_requester(&self, identities: &[Vec<u8>]) -> bool {
        self.identities.as_slice() == identities
    }

    /// An IOPub message of type `msg_type`, child of the request.
    pub(crate) fn iopub<C: Serialize + ?Sized>(
        &self,
        msg_type: &str,
        content: &C,
    ) -> Option<Frames> {
        let topic = vec![iopub_topic(&self.kernel_id, msg_type)];
        self.encode(topic, msg_type, content)
            .map(|(_, frames)| frames)
    }

    /// The `status` message with `execution_state`.
    pub(crate) fn status(&self, execution_state: &str) -> Option<Frames> {
        #[derive(Serialize)]
        struct Status<'a> {
            execution_state: &'a str,
        }
        self.iopub("status", &Status { execution_state })
    }

    /// Signs a message with a fresh header (the same bytes `Session::encode` would produce);
    /// returns its msg_id and frames.
    /// Failures are logged, not returned: a kernel cannot do more about an unencodable message.
    fn encode<C: Serialize + ?Sized>(
        &self,
        mut frames: Frames,
        msg_type: &str,
        content: &C,
    ) -> Option<(String, Frames)> {
        let fresh = self.session.header(msg_type);
        let parts = json::to_vec(&fresh).and_then(|h| Ok((h, json::to_vec(content)?)));
        let (header, content) = match parts {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("cannot build {msg_type}: {e}");
                return None;
            }
        };
        if frames.iter().any(|id| id.as_slice() == DELIMITER) {
            tracing::error!("cannot build {msg_type}: an identity equals the delimiter");
            return None;
        }
        const METADATA: &[u8] = b"{}";
        let signature =
            self.session
                .signer()
                .sign(&[&header, &self.parent_header, METADATA, &content]);
        frames.reserve(6);
        frames.push(DELIMITER.to_vec());
        frames.push(signature);
        frames.push(header);
        frames.push(self.parent_header.clone());
        frames.push(METADATA.to_vec());
        frames.push(content);
        Some((fresh.msg_id, frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernelgate_wire::{Key, Scheme, SessionConfig, Signer};
    use serde_json::json;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn session() -> kernelgate_wire::Result<Session> {
        let signer = Signer::new(Scheme::Sha256, &Key::new(b"answer-test-key"))?;
        Ok(Session::new(
            signer,
            SessionConfig {
                replay: None,
                ..SessionConfig::default()
            },
        ))
    }

    #[test]
    fn answers_verify_and_carry_the_parent() -> TestResult {
        let s = session()?;
        let mut request = s.message("execute_request", &json!({"code": "1+1"}), None)?;
        request.identities = vec![b"client-id".to_vec()];
        let answering = Answering::new(&s, "k1", &request)?;

        let reply = answering
            .reply("execute_reply", &json!({"status": "ok"}))
            .ok_or("no reply")?;
        let reply = s.receive(reply)?.into_inner();
        assert_eq!(reply.identities, vec![b"client-id".to_vec()]);
        assert_eq!(reply.parent_header.as_ref(), Some(&request.header));
        assert_eq!(reply.content, json!({"status": "ok"}));
        assert!(reply.metadata.is_empty());

        let busy = answering.status("busy").ok_or("no status")?;
        let busy = s.receive(busy)?.into_inner();
        assert_eq!(busy.identities, vec![b"kernel.k1.status".to_vec()]);
        assert_eq!(busy.msg_type(), "status");
        assert_eq!(busy.content, json!({"execution_state": "busy"}));
        assert_eq!(busy.parent_msg_id(), request.header.msg_id);
        Ok(())
    }

    #[test]
    fn same_bytes_as_the_session_encoder() -> TestResult {
        let s = session()?;
        let request = s.message("kernel_info_request", &json!({}), None)?;
        let answering = Answering::new(&s, "k1", &request)?;
        let frames = answering
            .reply("kernel_info_reply", &json!({"a": [1, 2.5], "b": "\u{e9}"}))
            .ok_or("no reply")?;
        let decoded = s.receive(frames.clone())?.into_inner();
        assert_eq!(s.encode(&decoded)?, frames);
        Ok(())
    }
}
