//! The blocking client: the async [`KernelClient`] driven on a private current-thread runtime.

use std::path::Path;
use std::time::Duration;

use kernelgate_wire::content::{
    CommInfoReply, CompleteReply, HistoryReply, HistoryRequest, InspectReply, InterruptReply,
    IsCompleteReply, KernelInfoReply, ShutdownReply,
};
use kernelgate_wire::{Channel, ConnectionInfo, Message};
use serde_json::Value;

use crate::client::{ClientConfig, KernelClient};
use crate::error::{Error, Result};
use crate::execute::{ExecuteOptions, ExecuteOutcome, OutputHandler};

/// A blocking client. Each method runs the [`KernelClient`] method of the same name to
/// completion; see there for the semantics. Must not be used from inside an async runtime.
#[derive(Debug)]
pub struct BlockingKernelClient {
    // Declared before `rt`: the sockets deregister from the runtime before it shuts down.
    client: KernelClient,
    rt: tokio::runtime::Runtime,
}

macro_rules! blocking {
    ($( $(#[$doc:meta])* fn $name:ident(&mut self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )*) => {
        $(
            $(#[$doc])*
            pub fn $name(&mut self $(, $arg: $ty)*) -> $ret {
                self.rt.block_on(self.client.$name($($arg),*))
            }
        )*
    };
}

impl BlockingKernelClient {
    /// Connects to the kernel described by `info`.
    pub fn connect(info: ConnectionInfo, config: ClientConfig) -> Result<BlockingKernelClient> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::Transport(kernelgate_zmq::Error::Thread(e)))?;
        let client = rt.block_on(KernelClient::connect(info, config))?;
        Ok(BlockingKernelClient { client, rt })
    }

    /// Reads the connection file at `path` and connects.
    pub fn from_file(path: impl AsRef<Path>, config: ClientConfig) -> Result<BlockingKernelClient> {
        let info = crate::connect::read_connection_file(path.as_ref())?;
        Self::connect(info, config)
    }

    /// The async client, for accessors and options.
    pub fn inner(&self) -> &KernelClient {
        &self.client
    }

    /// The async client, mutably (e.g. for [`KernelClient::start_heartbeat_monitor`]).
    pub fn inner_mut(&mut self) -> &mut KernelClient {
        &mut self.client
    }

    /// Runs any async operation of the client to completion on the private runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// [`KernelClient::execute`].
    pub fn execute(
        &mut self,
        code: &str,
        options: &ExecuteOptions,
        handler: &mut (dyn OutputHandler + Send),
    ) -> Result<ExecuteOutcome> {
        self.rt
            .block_on(self.client.execute(code, options, handler))
    }

    /// [`KernelClient::request`].
    pub fn request(&mut self, channel: Channel, msg_type: &str, content: Value) -> Result<Message> {
        self.rt
            .block_on(self.client.request(channel, msg_type, content))
    }

    /// [`KernelClient::send`].
    pub fn send(&mut self, channel: Channel, msg: Message) -> Result<String> {
        self.rt.block_on(self.client.send(channel, msg))
    }

    /// [`KernelClient::wait_reply`].
    pub fn wait_reply(
        &mut self,
        channel: Channel,
        msg_id: &str,
        timeout: Duration,
    ) -> Result<Message> {
        self.rt
            .block_on(self.client.wait_reply(channel, msg_id, timeout))
    }

    blocking! {
        /// [`KernelClient::kernel_info`].
        fn kernel_info(&mut self) -> Result<KernelInfoReply>;
        /// [`KernelClient::wait_for_ready`].
        fn wait_for_ready(&mut self, timeout: Duration) -> Result<KernelInfoReply>;
        /// [`KernelClient::complete`].
        fn complete(&mut self, code: &str, cursor_pos: usize) -> Result<CompleteReply>;
        /// [`KernelClient::inspect`].
        fn inspect(&mut self, code: &str, cursor_pos: usize, detail_level: u8) -> Result<InspectReply>;
        /// [`KernelClient::is_complete`].
        fn is_complete(&mut self, code: &str) -> Result<IsCompleteReply>;
        /// [`KernelClient::history`].
        fn history(&mut self, request: &HistoryRequest) -> Result<HistoryReply>;
        /// [`KernelClient::comm_info`].
        fn comm_info(&mut self, target_name: Option<&str>) -> Result<CommInfoReply>;
        /// [`KernelClient::shutdown`].
        fn shutdown(&mut self, restart: bool) -> Result<ShutdownReply>;
        /// [`KernelClient::interrupt_request`].
        fn interrupt_request(&mut self) -> Result<InterruptReply>;
        /// [`KernelClient::send_input`].
        fn send_input(&mut self, value: &str) -> Result<()>;
        /// [`KernelClient::recv_iopub`].
        fn recv_iopub(&mut self, timeout: Duration) -> Result<Message>;
        /// [`KernelClient::recv_input_request`].
        fn recv_input_request(&mut self, timeout: Duration) -> Result<Message>;
        /// [`KernelClient::flush_iopub`].
        fn flush_iopub(&mut self, quiet: Duration) -> Result<usize>;
        /// [`KernelClient::heartbeat_ok`].
        fn heartbeat_ok(&mut self, timeout: Duration) -> bool;
    }
}
