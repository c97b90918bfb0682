//! The cluster face of a ladder: one [`LadderExport`] per ladder this node runs (clustering on).
//!
//! It joins the process group [`crate::cluster::encoder_group`] of its source stream, so that
//! - any node can find where the ladder runs and ask it for the master playlist ([`Request::Master`]): the
//!   master playlist is the same on every node, whichever node runs the encoders;
//! - the source's owner, which placed the ladder, sees it vanish (the node died, was cut off, drained, or the
//!   ladder failed) and places it again.
//!
//! It lives exactly as long as the encoder actor it belongs to (the supervisor stops it with the encoder).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ractor::{pg, Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, warn};

use super::{master_of, Ladders};
use crate::cluster::wire::{Request, Response};
use crate::cluster::{encoder_group, RemoteMsg};
use crate::config::Config;
use crate::stream::StreamKey;

/// Longest wait a remote node may ask for.
const MAX_WAIT: Duration = Duration::from_secs(15);

/// Arguments of a [`LadderExport`].
pub struct LadderExportArgs {
    /// The source stream.
    pub key: StreamKey,
    /// This node's ladder table.
    pub ladders: Ladders,
    /// Node configuration.
    pub config: Arc<Config>,
}

/// The ladder's cluster face (see the module docs).
pub struct LadderExport;

impl Actor for LadderExport {
    type Msg = RemoteMsg;
    type State = LadderExportArgs;
    type Arguments = LadderExportArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RemoteMsg>,
        args: LadderExportArgs,
    ) -> Result<LadderExportArgs, ActorProcessingErr> {
        pg::join(encoder_group(&args.key), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<RemoteMsg>,
        msg: RemoteMsg,
        st: &mut LadderExportArgs,
    ) -> Result<(), ActorProcessingErr> {
        let RemoteMsg::Call(bytes, reply) = msg else { return Ok(()) };
        match Request::decode(bytes) {
            Ok(Request::Master { wait_ms }) => {
                let (ladders, config, key) = (st.ladders.clone(), st.config.clone(), st.key.clone());
                let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_WAIT);
                // Waiting for a starting ladder must not hold up other requests.
                tokio::spawn(async move {
                    let text = master_of(&ladders, &config, &key, wait).await;
                    let _ = reply.send(Response::Master(text.map(Bytes::from)).encode());
                });
            }
            Ok(other) => debug!(stream = %st.key, request = ?other, "ladder export: unexpected request"),
            Err(e) => warn!(stream = %st.key, error = %e, "ladder export: dropped a malformed request"),
        }
        Ok(())
    }
}
