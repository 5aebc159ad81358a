//! Size limits checked before any work is done on a message.

use crate::error::{err, ErrorKind, Result};

/// Bounds on an incoming multipart message. Checked before signature verification or parsing, so a
/// hostile peer cannot make us hash or parse more than these allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of frames, identities and buffers included.
    pub max_frames: usize,
    /// Maximum size of any single frame, in bytes.
    pub max_frame_bytes: usize,
    /// Maximum size of the whole message, in bytes.
    pub max_total_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frames: 1024,
            max_frame_bytes: 64 << 20,
            max_total_bytes: 128 << 20,
        }
    }
}

impl Limits {
    /// Checks the frame count and sizes of `frames` against these limits.
    pub fn check<B: AsRef<[u8]>>(&self, frames: &[B]) -> Result<()> {
        if frames.len() > self.max_frames {
            return err(
                ErrorKind::TooLarge,
                format!(
                    "{} frames exceed the limit of {}",
                    frames.len(),
                    self.max_frames
                ),
            );
        }
        let mut total: usize = 0;
        for frame in frames {
            let len = frame.as_ref().len();
            if len > self.max_frame_bytes {
                return err(
                    ErrorKind::TooLarge,
                    format!(
                        "a frame of {len} bytes exceeds the limit of {}",
                        self.max_frame_bytes
                    ),
                );
            }
            total = total.saturating_add(len);
        }
        if total > self.max_total_bytes {
            return err(
                ErrorKind::TooLarge,
                format!(
                    "{total} bytes exceed the message limit of {}",
                    self.max_total_bytes
                ),
            );
        }
        Ok(())
    }
}
