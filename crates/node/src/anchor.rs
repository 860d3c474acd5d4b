//! Anchoring datanet versions on-chain: every committed version's Merkle root
//! goes to `DatanetRegistry`, so adapters can cite it and anyone can check a
//! record's inclusion proof against a root the chain holds.
//!
//! Anchoring keeps no state of its own, so a crash can neither lose nor
//! repeat it: the chain says which datanets this node created (their
//! `DatanetCreated` events, keyed by a hash of the name) and which roots are
//! anchored (`datanetOfRoot`). Each run anchors whatever is missing, oldest
//! version first.

use std::sync::Arc;

use alloy_primitives::{Address, B256, U256, keccak256};
use credence_datanet::Datanets;
use credence_datanet::model::Version;
use credence_ledger::contracts::DatanetRegistry;
use credence_ledger::{Client, Deployment};

use crate::{Error, Result};

/// One cVOTE (18 decimals).
const VOTE: u128 = 1_000_000_000_000_000_000;

/// Anchors this node's datanet versions with the node's wallet.
#[derive(Debug)]
pub struct Anchorer {
    client: Client,
    registry: Address,
    /// `ContributionVotes`, minted 1 cVOTE per accepted record.
    votes: Address,
    datanets: Arc<Datanets>,
    /// One run at a time: two runs could both see a datanet missing and
    /// create it twice.
    running: std::sync::Mutex<()>,
}

impl Anchorer {
    /// An anchorer sending through `client` (which signs as the node, the
    /// cVOTE minter) to the deployment's `DatanetRegistry`.
    pub fn new(client: Client, contracts: &Deployment, datanets: Arc<Datanets>) -> Self {
        Self {
            client,
            registry: contracts.datanets,
            votes: contracts.votes,
            datanets,
            running: std::sync::Mutex::new(()),
        }
    }

    /// The `metadataCid` this node uses for a datanet: its name, hashed.
    pub fn metadata_id(name: &str) -> B256 {
        keccak256(format!("credence-datanet:{name}"))
    }

    /// Anchors every committed version not yet on-chain; returns how many.
    pub fn run(&self) -> Result<usize> {
        // The guard protects no data, so a poisoned lock is still usable.
        let _one_at_a_time = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let nets = self.datanets.list()?;
        let mut anchored = 0;
        for net in nets {
            let mut versions = self.datanets.log(&net.id)?;
            versions.reverse(); // oldest first, so on-chain numbers follow ours
            let mut id = None;
            for version in versions {
                let root = B256::from(version.root.0);
                if self.anchored(root)? {
                    continue;
                }
                let datanet = match id {
                    Some(id) => id,
                    None => *id.insert(self.onchain_id(&net.id)?),
                };
                // Votes first: minting is idempotent per root, anchoring is the
                // step that marks the version done.
                self.mint_record_votes(&net.id, &version, root)?;
                self.send(&DatanetRegistry::commitVersionCall {
                    datanetId: datanet,
                    root,
                    manifestCid: B256::from(version.id.0),
                })?;
                tracing::info!(datanet = %net.id, version = version.number, %root, "version anchored");
                anchored += 1;
            }
        }
        Ok(anchored)
    }

    /// 1 cVOTE to each contributor per record the version added (the
    /// voting rule in docs/ledger.md), with the version root as the reason.
    fn mint_record_votes(&self, datanet: &str, version: &Version, root: B256) -> Result<()> {
        let diff = self
            .datanets
            .diff(datanet, version.parent.as_ref(), &version.id)?;
        let mut counts = std::collections::BTreeMap::<Address, u128>::new();
        for entry in diff.added {
            *counts
                .entry(Address::from(entry.contributor.0))
                .or_default() += VOTE;
        }
        let amounts: Vec<(Address, u128)> = counts.into_iter().collect();
        let mut gas = credence_settle::GasReport::default();
        credence_settle::settler::mint_once(&self.client, self.votes, root, &amounts, &mut gas)?;
        Ok(())
    }

    fn anchored(&self, root: B256) -> Result<bool> {
        let owner = self
            .client
            .view(self.registry, &DatanetRegistry::datanetOfRootCall { root })?;
        Ok(!owner.is_zero())
    }

    /// The on-chain id of the datanet this node created for `name`, creating it if needed.
    fn onchain_id(&self, name: &str) -> Result<U256> {
        let wanted = Self::metadata_id(name);
        let me = self.client.signer_address();
        let created = self
            .client
            .events::<DatanetRegistry::DatanetCreated>(self.registry, 0)?;
        if let Some((event, _)) = created
            .into_iter()
            .find(|(e, _)| e.metadataCid == wanted && Some(e.curator) == me)
        {
            return Ok(event.datanetId);
        }
        let receipt = self.send(&DatanetRegistry::createDatanetCall {
            metadataCid: wanted,
        })?;
        receipt
            .events::<DatanetRegistry::DatanetCreated>()
            .first()
            .map(|e| e.datanetId)
            .ok_or_else(|| {
                Error::Chain(credence_ledger::Error::BadResponse(
                    "createDatanet emitted no DatanetCreated event".into(),
                ))
            })
    }

    fn send<C: alloy_sol_types::SolCall>(&self, call: &C) -> Result<credence_ledger::Receipt> {
        Ok(self.client.send(self.registry, call)?)
    }
}
