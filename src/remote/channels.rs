//! A kernel's WebSocket: requests out, every forwarded message in, in the v1 binary framing or
//! the legacy JSON one (the pure encodings are [`kernelgate_wire::websocket`]'s).

use std::time::Duration;

use anyhow::{anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use kernelgate_wire::websocket::{self, WsParts};
use kernelgate_wire::{Channel, Header, Message};
use serde_json::{json, Map, Value};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::Conn;

/// Most parts (channel + 4 + buffers) accepted in one binary frame.
const MAX_PARTS: usize = 1024;

/// A kernel's WebSocket: sends requests, receives every message the host forwards.
pub struct Channels {
    ws: WebSocketStream<Conn>,
    v1: bool,
    session: String,
    username: String,
}

impl Channels {
    pub(super) fn new(ws: WebSocketStream<Conn>, v1: bool, session: String) -> Channels {
        Channels {
            ws,
            v1,
            session,
            username: std::env::var("USER").unwrap_or_else(|_| "kernelgate".into()),
        }
    }

    /// Whether the v1 subprotocol is in use (else legacy JSON).
    pub fn is_v1(&self) -> bool {
        self.v1
    }

    /// Sends a message on `channel` (shell, control or stdin); its msg_id.
    pub async fn send(
        &mut self,
        channel: Channel,
        msg_type: &str,
        content: Value,
        parent: Option<&Header>,
    ) -> anyhow::Result<String> {
        let header = Header {
            msg_id: uuid::Uuid::new_v4().to_string(),
            msg_type: msg_type.to_owned(),
            username: self.username.clone(),
            session: self.session.clone(),
            date: kernelgate_wire::message::format_date(chrono::Utc::now()),
            version: kernelgate_wire::PROTOCOL_VERSION.to_owned(),
            extra: Map::new(),
        };
        let parent = parent.map_or_else(|| json!({}), |p| json!(p));
        let frame = if self.v1 {
            let ser = |v: &Value| serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
            WsMessage::Binary(
                websocket::encode_v1(&WsParts {
                    channel: channel.name().to_owned(),
                    parts: [
                        ser(&json!(header)),
                        ser(&parent),
                        b"{}".to_vec(),
                        ser(&content),
                    ],
                    buffers: Vec::new(),
                })
                .into(),
            )
        } else {
            let m = json!({
                "channel": channel.name(),
                "header": header,
                "parent_header": parent,
                "metadata": {},
                "content": content,
            });
            WsMessage::Text(m.to_string().into())
        };
        self.ws
            .send(frame)
            .await
            .map_err(|e| anyhow!(e).context("sending on the kernel's WebSocket"))?;
        Ok(header.msg_id)
    }

    /// The next message before `deadline` (None: the deadline passed). Frames that do not
    /// decode are logged and skipped.
    pub async fn recv(&mut self, deadline: Instant) -> anyhow::Result<Option<(Channel, Message)>> {
        loop {
            let frame = match timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) | Ok(Some(Ok(WsMessage::Close(_)))) => {
                    bail!("the host closed the kernel's WebSocket (was the kernel shut down?)")
                }
                Ok(Some(Err(e))) => return Err(anyhow!(e).context("the kernel's WebSocket")),
                Ok(Some(Ok(f))) => f,
            };
            match decode(frame, self.v1) {
                Ok(Some(m)) => {
                    tracing::debug!(
                        channel = m.0.name(),
                        msg_type = m.1.msg_type(),
                        parent = m.1.parent_msg_id(),
                        "received"
                    );
                    return Ok(Some(m));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("skipped a message from the host: {e}"),
            }
        }
    }

    /// Closes the WebSocket (best effort, bounded).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// A frame as a message (None for control frames).
fn decode(frame: WsMessage, v1: bool) -> Result<Option<(Channel, Message)>, String> {
    let (channel, v, buffers) = match frame {
        WsMessage::Text(t) => {
            let v: Value =
                serde_json::from_str(t.as_str()).map_err(|e| format!("malformed JSON: {e}"))?;
            (None, v, Vec::new())
        }
        WsMessage::Binary(b) if v1 => {
            let p = websocket::decode_v1(&b, MAX_PARTS).map_err(|e| e.to_string())?;
            let [h, ph, md, c] = &p.parts;
            let parse = |b: &[u8]| -> Result<Value, String> {
                if b.is_empty() {
                    Ok(json!({}))
                } else {
                    serde_json::from_slice(b).map_err(|e| format!("malformed JSON: {e}"))
                }
            };
            let v = json!({
                "header": parse(h)?, "parent_header": parse(ph)?, "metadata": parse(md)?, "content": parse(c)?,
            });
            (Some(p.channel), v, p.buffers)
        }
        WsMessage::Binary(b) => {
            let (j, buffers) =
                websocket::decode_legacy_binary(&b, MAX_PARTS).map_err(|e| e.to_string())?;
            let v: Value =
                serde_json::from_slice(&j).map_err(|e| format!("malformed JSON: {e}"))?;
            (None, v, buffers)
        }
        _ => return Ok(None),
    };
    let Value::Object(mut o) = v else {
        return Err("a message that is not a JSON object".into());
    };
    let channel = match channel {
        Some(c) => c,
        None => o
            .get("channel")
            .and_then(Value::as_str)
            .ok_or("a message without a channel")?
            .to_owned(),
    };
    let channel = Channel::parse(&channel).ok_or_else(|| format!("unknown channel {channel:?}"))?;
    let header: Header = serde_json::from_value(o.remove("header").unwrap_or(Value::Null))
        .map_err(|e| format!("header: {e}"))?;
    let parent_header = match o.remove("parent_header") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(p) => Some(serde_json::from_value(p).map_err(|e| format!("parent_header: {e}"))?),
    };
    let metadata = match o.remove("metadata") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let content = o.remove("content").unwrap_or_else(|| json!({}));
    Ok(Some((
        channel,
        Message {
            identities: Vec::new(),
            header,
            parent_header,
            metadata,
            content,
            buffers,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_in_both_framings() {
        let h = json!({"msg_id": "a", "msg_type": "stream", "session": "s", "username": "u", "date": "2020-01-01T00:00:00Z", "version": "5.4"});
        let p = json!({"msg_id": "p", "msg_type": "execute_request", "session": "s", "username": "u", "date": "2020-01-01T00:00:00Z", "version": "5.4"});
        let c = json!({"name": "stdout", "text": "hi"});
        let text = json!({"channel": "iopub", "header": h, "parent_header": p, "metadata": {}, "content": c});
        let legacy = decode(WsMessage::Text(text.to_string().into()), false);
        let ser = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
        let bytes = websocket::encode_v1(&WsParts {
            channel: "iopub".into(),
            parts: [ser(&h), ser(&p), b"{}".to_vec(), ser(&c)],
            buffers: vec![vec![1]],
        });
        let v1 = decode(WsMessage::Binary(bytes.into()), true);
        for (m, bufs) in [(legacy, 0), (v1, 1)] {
            let Ok(Some((ch, m))) = m else {
                unreachable!("{m:?}")
            };
            assert_eq!(ch, Channel::IoPub);
            assert_eq!((m.msg_type(), m.parent_msg_id()), ("stream", "p"));
            assert_eq!(m.content, c);
            assert_eq!(m.buffers.len(), bufs);
        }
        assert!(decode(WsMessage::Text("[1]".into()), false).is_err());
        assert!(decode(WsMessage::Binary(vec![1, 2].into()), true).is_err());
        assert!(matches!(
            decode(WsMessage::Ping(vec![].into()), true),
            Ok(None)
        ));
    }
}
