//! The receive and send pipelines of one session (one kernel instance or one client).
//!
//! Receive: limits -> frame layout -> constant-time HMAC check -> (only now) JSON parsing ->
//! freshness and exact replay check -> [`Verified`]. Nothing is parsed before the signature
//! checks out, and a digest enters the replay history only after it verified.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Map;

use crate::auth::{Digest, Signer};
use crate::error::{ErrorKind, Result};
use crate::frames::{FrameParts, Layout};
use crate::limits::Limits;
use crate::message::{self, format_date, Header, Message, PROTOCOL_VERSION};
use crate::raw::RawMessage;
use crate::replay::{ReaderId, ReplayConfig, ReplayGuard};

/// A message whose signature, freshness and uniqueness were checked. Only
/// [`Session::receive`] / [`Session::admit`] can build one, so code that takes a `Verified`
/// cannot be handed an unchecked message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    /// The checked value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Frames whose signature verified, not yet checked for freshness or replay.
#[derive(Debug)]
pub struct Authentic {
    frames: Vec<Vec<u8>>,
    layout: Layout,
    digest: Option<Digest>,
}

/// How a session is set up.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our session id (put in every header we write).
    pub session_id: String,
    /// The user name put in every header we write.
    pub username: String,
    /// Size limits on incoming messages.
    pub limits: Limits,
    /// Replay protection; `None` turns it off (only sensible for tests and benchmarks).
    pub replay: Option<ReplayConfig>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            session_id: uuid::Uuid::new_v4().to_string(),
            username: "kernel".into(),
            limits: Limits::default(),
            replay: Some(ReplayConfig::default()),
        }
    }
}

/// Signs outgoing and verifies incoming messages. Cheap to clone; clones share one replay history,
/// so a message accepted on one channel is refused if replayed on another.
#[derive(Debug, Clone)]
pub struct Session {
    signer: Signer,
    limits: Limits,
    replay: Option<Arc<Mutex<ReplayGuard>>>,
    session_id: Arc<str>,
    username: Arc<str>,
}

impl Session {
    /// A session started now.
    pub fn new(signer: Signer, config: SessionConfig) -> Session {
        Session::started_at(signer, config, Utc::now())
    }

    /// A session started at `started`: messages dated before it (less the clock skew) are stale.
    pub fn started_at(signer: Signer, config: SessionConfig, started: DateTime<Utc>) -> Session {
        Session {
            signer,
            limits: config.limits,
            replay: config
                .replay
                .map(|c| Arc::new(Mutex::new(ReplayGuard::new(c, started)))),
            session_id: config.session_id.into(),
            username: config.username.into(),
        }
    }

    /// Our session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The signer in use.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks limits, layout and signature. No JSON is parsed here.
    pub fn authenticate(&self, frames: Vec<Vec<u8>>) -> Result<Authentic> {
        self.limits.check(&frames)?;
        let layout = Layout::of(&frames)?;
        let digest = self
            .signer
            .verify(layout.signature(&frames), &layout.signed(&frames))?;
        Ok(Authentic {
            frames,
            layout,
            digest,
        })
    }

    /// Parses an authentic message and admits it once (freshness and replay), at time `now`.
    pub fn admit(&self, authentic: Authentic, now: DateTime<Utc>) -> Result<Verified<Message>> {
        self.admit_read(authentic, None, now)
    }

    fn admit_read(
        &self,
        authentic: Authentic,
        reader: Option<&ReaderId>,
        now: DateTime<Utc>,
    ) -> Result<Verified<Message>> {
        let Authentic {
            mut frames,
            layout,
            digest,
        } = authentic;
        let [h, p, m, c] = layout.signed(&frames);
        let header = message::decode_header(h)?;
        let parent_header = message::decode_parent(p)?;
        let metadata = message::decode_metadata(m)?;
        let content = message::decode_content(c)?;
        self.admit_once(&header, digest, reader, now)?;
        let buffers = frames.split_off(layout.buffers_start().min(frames.len()));
        frames.truncate(layout.delimiter);
        Ok(Verified(Message {
            identities: frames,
            header,
            parent_header,
            metadata,
            content,
            buffers,
        }))
    }

    /// Like [`Session::admit`], but keeps the four signed parts as received (checked to be
    /// well-formed JSON, not parsed into values): for relays that pass messages on.
    pub fn admit_raw(
        &self,
        authentic: Authentic,
        now: DateTime<Utc>,
    ) -> Result<Verified<RawMessage>> {
        let Authentic {
            mut frames,
            layout,
            digest,
        } = authentic;
        let header = message::decode_header(layout.signed(&frames)[0])?;
        let buffers = frames.split_off(layout.buffers_start().min(frames.len()));
        // What is left after the signature is exactly the four signed parts (Layout checked).
        let signed: [Vec<u8>; 4] = frames
            .split_off((layout.delimiter + 2).min(frames.len()))
            .try_into()
            .map_err(|_| crate::Error::new(ErrorKind::MalformedFrames, "not 4 signed parts"))?;
        frames.truncate(layout.delimiter);
        let raw = RawMessage::checked(frames, header, signed, buffers)?;
        self.admit_once(&raw.header, digest, None, now)?;
        Ok(Verified(raw))
    }

    /// [`Session::authenticate`] then [`Session::admit_raw`] at the current time.
    pub fn receive_raw(&self, frames: Vec<Vec<u8>>) -> Result<Verified<RawMessage>> {
        let authentic = self.authenticate(frames)?;
        self.admit_raw(authentic, Utc::now())
    }

    /// Freshness and exact replay check; the digest is recorded only now, after the signature
    /// verified and every part parsed.
    fn admit_once(
        &self,
        header: &Header,
        digest: Option<Digest>,
        reader: Option<&ReaderId>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if let (Some(guard), Some(digest)) = (&self.replay, digest) {
            let date = header.parsed_date()?;
            let mut guard = lock(guard);
            match reader {
                Some(reader) => guard.admit_read(reader, digest, date, now)?,
                None => guard.admit(digest, date, now)?,
            }
        }
        Ok(())
    }

    /// A receiver for a socket that may fall behind (a kernel's shell, read only between cells):
    /// its messages are judged fresh by the last moment it reported being caught up, so requests
    /// queued behind a long cell are not refused as stale. See [`crate::replay`].
    pub fn reader(&self) -> Reader {
        let id = self
            .replay
            .as_ref()
            .map(|guard| lock(guard).register_reader(Utc::now()));
        Reader {
            session: self.clone(),
            id,
        }
    }

    /// [`Session::authenticate`] then [`Session::admit`] at the current time.
    pub fn receive(&self, frames: Vec<Vec<u8>>) -> Result<Verified<Message>> {
        let authentic = self.authenticate(frames)?;
        self.admit(authentic, Utc::now())
    }

    /// A fresh header of type `msg_type` from this session, dated now.
    pub fn header(&self, msg_type: &str) -> Header {
        Header {
            msg_id: new_msg_id(),
            msg_type: msg_type.to_owned(),
            username: self.username.to_string(),
            session: self.session_id.to_string(),
            date: format_date(Utc::now()),
            version: PROTOCOL_VERSION.to_owned(),
            extra: Map::new(),
        }
    }

    /// A new message of type `msg_type` with typed `content`, replying to `parent` if given.
    /// Identities are copied from the parent message when it is given (so replies route back).
    pub fn message<C: Serialize>(
        &self,
        msg_type: &str,
        content: &C,
        parent: Option<&Message>,
    ) -> Result<Message> {
        let content = serde_json::to_value(content)
            .map_err(|e| crate::Error::new(ErrorKind::Encode, e.to_string()))?;
        Ok(Message {
            identities: parent.map(|p| p.identities.clone()).unwrap_or_default(),
            header: self.header(msg_type),
            parent_header: parent.map(|p| p.header.clone()),
            metadata: Map::new(),
            content,
            buffers: Vec::new(),
        })
    }

    /// Serializes and signs `msg` into multipart frames.
    pub fn encode(&self, msg: &Message) -> Result<Vec<Vec<u8>>> {
        let [header, parent, metadata, content] = serialize_parts(msg)?;
        self.sign_frames(
            &msg.identities,
            [&header, &parent, &metadata, &content],
            &msg.buffers,
        )
    }

    /// Like [`Session::encode`] but consumes `msg`, moving identities and buffers into the frames
    /// instead of copying them (a 1 MiB buffer costs nothing extra).
    pub fn encode_owned(&self, msg: Message) -> Result<Vec<Vec<u8>>> {
        if msg
            .identities
            .iter()
            .any(|id| id.as_slice() == crate::frames::DELIMITER)
        {
            return Err(crate::Error::new(
                ErrorKind::MalformedFrames,
                "an identity equals the <IDS|MSG> delimiter",
            ));
        }
        let [header, parent, metadata, content] = serialize_parts(&msg)?;
        let signature = self.signer.sign(&[&header, &parent, &metadata, &content]);
        let mut frames = msg.identities;
        frames.reserve(6 + msg.buffers.len());
        frames.push(crate::frames::DELIMITER.to_vec());
        frames.push(signature);
        frames.extend([header, parent, metadata, content]);
        frames.extend(msg.buffers);
        Ok(frames)
    }

    /// Signs already-serialized parts and assembles the frames.
    pub fn sign_frames(
        &self,
        identities: &[Vec<u8>],
        signed: [&[u8]; 4],
        buffers: &[Vec<u8>],
    ) -> Result<Vec<Vec<u8>>> {
        let signature = self.signer.sign(&signed);
        FrameParts {
            identities,
            signature: &signature,
            signed,
            buffers,
        }
        .to_frames()
    }

    /// See [`ReplayGuard::next_sweep`]; `None` also when replay protection is off.
    pub fn replay_next_sweep(&self) -> Option<DateTime<Utc>> {
        lock(self.replay.as_ref()?).next_sweep(Utc::now())
    }

    /// Forgets the replay history's expired digests now (see [`Session::replay_next_sweep`]);
    /// how many were forgotten.
    pub fn forget_expired(&self) -> usize {
        self.replay
            .as_ref()
            .map_or(0, |g| lock(g).forget_expired(Utc::now()))
    }

    /// Number of digests in the replay history (0 when replay protection is off).
    pub fn replay_history_len(&self) -> usize {
        match &self.replay {
            Some(g) => lock(g).len(),
            None => 0,
        }
    }
}

fn lock(guard: &Mutex<ReplayGuard>) -> std::sync::MutexGuard<'_, ReplayGuard> {
    guard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One receiving socket of a [`Session`] that reads a backlog; see [`Session::reader`].
/// Dropping it lets the replay history forget what only this reader could still accept.
#[derive(Debug)]
pub struct Reader {
    session: Session,
    id: Option<ReaderId>,
}

impl Reader {
    /// Reports that this reader's queue was just seen empty, or it was waiting for input:
    /// everything it reads from now on arrived from now on.
    pub fn caught_up(&self) {
        if let (Some(guard), Some(id)) = (&self.session.replay, &self.id) {
            lock(guard).caught_up(id, Utc::now());
        }
    }

    /// Reports that this reader is about to block waiting for input; call
    /// [`Reader::caught_up`] as soon as the wait ends. While it waits it holds no sweep back.
    pub fn waiting(&self) {
        if let (Some(guard), Some(id)) = (&self.session.replay, &self.id) {
            lock(guard).waiting(id);
        }
    }

    /// [`Session::receive`], judging freshness by when this reader was last caught up.
    pub fn receive(&self, frames: Vec<Vec<u8>>) -> Result<Verified<Message>> {
        let authentic = self.session.authenticate(frames)?;
        self.session
            .admit_read(authentic, self.id.as_ref(), Utc::now())
    }

    /// The session this reader belongs to.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let (Some(guard), Some(id)) = (&self.session.replay, self.id.take()) {
            lock(guard).unregister_reader(id);
        }
    }
}

/// A fresh random message id, hyphenated lowercase as jupyter writes it.
fn new_msg_id() -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// The four signed parts of `msg`, serialized as jupyter_client would (the same bytes as
/// `crate::json::to_vec` on each part, written without serde's per-value dispatch).
pub(crate) fn serialize_parts(msg: &Message) -> Result<[Vec<u8>; 4]> {
    let mut header = Vec::with_capacity(256);
    msg.header.write_json(&mut header)?;
    let parent = match &msg.parent_header {
        Some(p) => {
            let mut out = Vec::with_capacity(256);
            p.write_json(&mut out)?;
            out
        }
        None => b"{}".to_vec(),
    };
    let metadata = if msg.metadata.is_empty() {
        b"{}".to_vec()
    } else {
        crate::json::to_vec(&msg.metadata)?
    };
    let mut content = Vec::with_capacity(256);
    crate::json::write_value(&mut content, &msg.content)?;
    Ok([header, parent, metadata, content])
}

/// Decodes frames with no key and no replay check: for tools that inspect traffic, never for
/// accepting requests.
pub fn decode_unverified(frames: Vec<Vec<u8>>, limits: &Limits) -> Result<Message> {
    limits.check(&frames)?;
    let layout = Layout::of(&frames)?;
    let session = Session {
        signer: Signer::unauthenticated(),
        limits: *limits,
        replay: None,
        session_id: "".into(),
        username: "".into(),
    };
    let authentic = Authentic {
        frames,
        layout,
        digest: None,
    };
    session
        .admit(authentic, Utc::now())
        .map(Verified::into_inner)
}
