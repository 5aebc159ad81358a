//! Splitting a multipart message into its parts, and building frames back.
//!
//! Layout: `[identities…, "<IDS|MSG>", signature, header, parent_header, metadata, content, buffers…]`.
//! On IOPub the single "identity" is the topic. The delimiter is the FIRST frame equal to
//! `<IDS|MSG>` (as jupyter_client does); an identity equal to the delimiter therefore cannot be
//! received, and [`FrameParts::to_frames`] refuses to send one.

use crate::error::{err, ErrorKind, Result};

/// The frame separating routing identities from the message.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// Indices into a received multipart message, validated to be in bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Index of the delimiter frame; identities are `frames[..delimiter]`.
    pub delimiter: usize,
}

impl Layout {
    /// Finds the delimiter and checks that the signature and the four signed parts follow it.
    pub fn of<B: AsRef<[u8]>>(frames: &[B]) -> Result<Layout> {
        let Some(delimiter) = frames.iter().position(|f| f.as_ref() == DELIMITER) else {
            return err(ErrorKind::MalformedFrames, "no <IDS|MSG> delimiter frame");
        };
        let after = frames.len().saturating_sub(delimiter + 1);
        if after < 5 {
            return err(
                ErrorKind::MalformedFrames,
                format!(
                    "{after} frames after the delimiter; a message needs a signature and 4 signed parts"
                ),
            );
        }
        Ok(Layout { delimiter })
    }

    /// The identity (or IOPub topic) frames.
    pub fn identities<'a, B: AsRef<[u8]>>(&self, frames: &'a [B]) -> &'a [B] {
        frames.get(..self.delimiter).unwrap_or(&[])
    }

    /// The signature frame.
    pub fn signature<'a, B: AsRef<[u8]>>(&self, frames: &'a [B]) -> &'a [u8] {
        frames
            .get(self.delimiter + 1)
            .map(AsRef::as_ref)
            .unwrap_or(&[])
    }

    /// Header, parent_header, metadata and content, in signing order.
    pub fn signed<'a, B: AsRef<[u8]>>(&self, frames: &'a [B]) -> [&'a [u8]; 4] {
        let at = |i: usize| {
            frames
                .get(self.delimiter + 2 + i)
                .map(AsRef::as_ref)
                .unwrap_or(&[])
        };
        [at(0), at(1), at(2), at(3)]
    }

    /// Index of the first buffer frame.
    pub fn buffers_start(&self) -> usize {
        self.delimiter + 6
    }
}

/// The parts of an outgoing message, already serialized, to be assembled into frames.
#[derive(Debug, Clone, Copy)]
pub struct FrameParts<'a> {
    /// Routing identities (or the IOPub topic).
    pub identities: &'a [Vec<u8>],
    /// The signature frame.
    pub signature: &'a [u8],
    /// Header, parent_header, metadata and content.
    pub signed: [&'a [u8]; 4],
    /// Unsigned binary buffers.
    pub buffers: &'a [Vec<u8>],
}

impl FrameParts<'_> {
    /// Builds the multipart frames. Refuses an identity equal to the delimiter, which the receiver
    /// would take for the delimiter.
    pub fn to_frames(&self) -> Result<Vec<Vec<u8>>> {
        if self.identities.iter().any(|id| id.as_slice() == DELIMITER) {
            return err(
                ErrorKind::MalformedFrames,
                "an identity equals the <IDS|MSG> delimiter",
            );
        }
        let mut frames = Vec::with_capacity(self.identities.len() + 6 + self.buffers.len());
        frames.extend(self.identities.iter().cloned());
        frames.push(DELIMITER.to_vec());
        frames.push(self.signature.to_vec());
        frames.extend(self.signed.iter().map(|p| p.to_vec()));
        frames.extend(self.buffers.iter().cloned());
        Ok(frames)
    }
}

/// The IOPub topic jupyter uses for a message: `kernel.<kernel id or session>.<msg_type>`.
pub fn iopub_topic(kernel_id: &str, msg_type: &str) -> Vec<u8> {
    format!("kernel.{kernel_id}.{msg_type}").into_bytes()
}
