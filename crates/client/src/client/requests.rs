//! The typed requests of the protocol, each a thin call to `KernelClient::typed`.

use kernelgate_wire::content::{
    CommInfoReply, CommInfoRequest, CompleteReply, CompleteRequest, HistoryReply, HistoryRequest,
    InputReply, InspectReply, InspectRequest, InterruptReply, InterruptRequest, IsCompleteReply,
    IsCompleteRequest, KernelInfoReply, KernelInfoRequest, ShutdownReply, ShutdownRequest,
};
use kernelgate_wire::Channel;
use serde_json::Map;

use super::KernelClient;
use crate::error::Result;

impl KernelClient {
    /// `kernel_info_request`.
    pub async fn kernel_info(&mut self) -> Result<KernelInfoReply> {
        self.typed(
            Channel::Shell,
            KernelInfoRequest::MSG_TYPE,
            &KernelInfoRequest::default(),
        )
        .await
    }

    /// `complete_request` at `cursor_pos` (unicode code points).
    pub async fn complete(&mut self, code: &str, cursor_pos: usize) -> Result<CompleteReply> {
        let req = CompleteRequest {
            code: code.into(),
            cursor_pos,
            extra: Map::new(),
        };
        self.typed(Channel::Shell, CompleteRequest::MSG_TYPE, &req)
            .await
    }

    /// `inspect_request` at `cursor_pos` with `detail_level` 0 or 1.
    pub async fn inspect(
        &mut self,
        code: &str,
        cursor_pos: usize,
        detail_level: u8,
    ) -> Result<InspectReply> {
        let req = InspectRequest {
            code: code.into(),
            cursor_pos,
            detail_level,
            extra: Map::new(),
        };
        self.typed(Channel::Shell, InspectRequest::MSG_TYPE, &req)
            .await
    }

    /// `is_complete_request`.
    pub async fn is_complete(&mut self, code: &str) -> Result<IsCompleteReply> {
        let req = IsCompleteRequest {
            code: code.into(),
            extra: Map::new(),
        };
        self.typed(Channel::Shell, IsCompleteRequest::MSG_TYPE, &req)
            .await
    }

    /// `history_request`.
    pub async fn history(&mut self, request: &HistoryRequest) -> Result<HistoryReply> {
        self.typed(Channel::Shell, HistoryRequest::MSG_TYPE, request)
            .await
    }

    /// `comm_info_request`, optionally for one target.
    pub async fn comm_info(&mut self, target_name: Option<&str>) -> Result<CommInfoReply> {
        let req = CommInfoRequest {
            target_name: target_name.map(str::to_owned),
            extra: Map::new(),
        };
        self.typed(Channel::Shell, CommInfoRequest::MSG_TYPE, &req)
            .await
    }

    /// `shutdown_request` on control.
    pub async fn shutdown(&mut self, restart: bool) -> Result<ShutdownReply> {
        let req = ShutdownRequest {
            restart,
            extra: Map::new(),
        };
        self.typed(Channel::Control, ShutdownRequest::MSG_TYPE, &req)
            .await
    }

    /// `interrupt_request` on control (for kernels whose interrupt mode is `message`; ipykernel
    /// also honours it by signalling itself).
    pub async fn interrupt_request(&mut self) -> Result<InterruptReply> {
        self.typed(
            Channel::Control,
            InterruptRequest::MSG_TYPE,
            &InterruptRequest::default(),
        )
        .await
    }

    /// Sends an `input_reply` with `value`, answering the last `input_request` seen.
    pub async fn send_input(&mut self, value: &str) -> Result<()> {
        let reply = InputReply {
            value: value.into(),
            extra: Map::new(),
        };
        let parent = self.last_input_request.take();
        let mut msg = self
            .session
            .message(InputReply::MSG_TYPE, &reply, parent.as_ref())?;
        msg.identities.clear();
        self.send(Channel::Stdin, msg).await.map(drop)
    }
}
