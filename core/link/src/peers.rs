//! [`LinkPeers`]: the other core nodes of a cluster, reached over the link, as the chat
//! service's [`Peers`].

use crate::client::{CallError, LinkClient};
use crate::wire::Call;
use async_trait::async_trait;
use confab_chat::{Caller, PeerError, Peers};
use confab_proto::Message;
use confab_proto::rest::PostMessageRequest;
use std::collections::HashMap;
use std::sync::Arc;

/// A link client per peer node, by node name.
#[derive(Debug, Default)]
pub struct LinkPeers {
    nodes: HashMap<String, Arc<LinkClient>>,
}

impl LinkPeers {
    pub fn new(clients: impl IntoIterator<Item = Arc<LinkClient>>) -> Arc<Self> {
        let nodes = clients
            .into_iter()
            .map(|client| (client.node().to_string(), client))
            .collect();
        Arc::new(Self { nodes })
    }
}

#[async_trait]
impl Peers for LinkPeers {
    async fn sequence_at(
        &self,
        node: &str,
        caller: &Caller,
        req: PostMessageRequest,
    ) -> Result<Message, PeerError> {
        let Some(client) = self.nodes.get(node) else {
            return Err(PeerError::Unreachable(format!(
                "{node} (not in the geo-config)"
            )));
        };
        let call = Call::SequenceMessage {
            caller: caller.clone(),
            req,
        };
        client.request(call).await.map_err(|e| match e {
            CallError::Unreachable { node, .. } => PeerError::Unreachable(node),
            CallError::Lost { node, .. } => PeerError::Lost(node),
            CallError::Api(e) => PeerError::Api(e),
        })
    }
}
