//! DatanetRegistry and ModelRegistry: anchoring versions and adapters.

use alloy_primitives::{B256, U256};
use credence_ledger::contracts::datanet_registry::DatanetRegistry::{self, DatanetRegistryErrors};
use credence_ledger::contracts::model_registry::ModelRegistry::{self, ModelRegistryErrors};

use crate::support::{fresh, send, send_err, view, wallet};

#[test]
fn datanet_versions_and_adapter_registrations_are_anchored() {
    let t = fresh();
    let c = &t.chain;
    let d = *c.deployment();
    let (curator, dev, other) = (wallet(c, 1), wallet(c, 2), wallet(c, 3));
    send(
        c,
        &curator,
        d.datanets,
        DatanetRegistry::createDatanetCall {
            metadataCid: B256::repeat_byte(1),
        },
    );
    let root = B256::repeat_byte(0xaa);
    let commit = |root| DatanetRegistry::commitVersionCall {
        datanetId: U256::from(1),
        root,
        manifestCid: B256::repeat_byte(2),
    };
    let e: DatanetRegistryErrors = send_err(c, &other, d.datanets, commit(root));
    assert!(matches!(e, DatanetRegistryErrors::NotCurator(_)), "{e:?}");
    send(c, &curator, d.datanets, commit(root));
    let e: DatanetRegistryErrors = send_err(c, &curator, d.datanets, commit(root));
    assert!(
        matches!(e, DatanetRegistryErrors::RootAlreadyCommitted(_)),
        "{e:?}"
    );
    let v = view(
        c,
        d.datanets,
        DatanetRegistry::versionCall {
            datanetId: U256::from(1),
            v: 1,
        },
    );
    assert_eq!(v.root, root);

    let split = |o, c, n| ModelRegistry::FeeSplit {
        ownerBps: o,
        contributorsBps: c,
        nodeBps: n,
    };
    let register = |content: u8, roots: Vec<B256>, split| ModelRegistry::registerCall {
        contentHash: B256::repeat_byte(content),
        baseModelHash: B256::repeat_byte(0xbb),
        datanetRoots: roots,
        pricePer1kTokens: alloy_primitives::aliases::U96::from(1000u64),
        split,
    };
    let e: ModelRegistryErrors = send_err(
        c,
        &dev,
        d.models,
        register(1, vec![root], split(5000, 4000, 500)),
    );
    assert!(matches!(e, ModelRegistryErrors::BadSplit(_)), "{e:?}");
    let e: ModelRegistryErrors = send_err(
        c,
        &dev,
        d.models,
        register(1, vec![B256::repeat_byte(9)], split(5000, 4000, 1000)),
    );
    assert!(
        matches!(e, ModelRegistryErrors::UnknownDatanetRoot(_)),
        "{e:?}"
    );
    let reg = send(
        c,
        &dev,
        d.models,
        register(1, vec![root], split(5000, 4000, 1000)),
    );
    eprintln!("gas: adapter register = {}", reg.gas_used);
    let id = U256::from(1);
    let e: ModelRegistryErrors = send_err(
        c,
        &dev,
        d.models,
        register(1, vec![], split(5000, 4000, 1000)),
    );
    assert!(
        matches!(e, ModelRegistryErrors::ContentAlreadyRegistered(_)),
        "{e:?}"
    );

    // New weights become version 2 under the same id and price.
    send(
        c,
        &dev,
        d.models,
        ModelRegistry::publishVersionCall {
            adapterId: id,
            contentHash: B256::repeat_byte(2),
            baseModelHash: B256::repeat_byte(0xbb),
            datanetRoots: vec![root],
        },
    );
    let v2 = view(
        c,
        d.models,
        ModelRegistry::adapterVersionCall {
            adapterId: id,
            version: 2,
        },
    );
    assert_eq!(
        (v2.contentHash, v2.datanetRoots),
        (B256::repeat_byte(2), vec![root])
    );
    let price = ModelRegistry::setPriceCall {
        adapterId: id,
        pricePer1kTokens: alloy_primitives::aliases::U96::from(7u64),
    };
    let e: ModelRegistryErrors = send_err(c, &other, d.models, price.clone());
    assert!(matches!(e, ModelRegistryErrors::NotOwner(_)), "{e:?}");
    send(c, &dev, d.models, price.clone());
    let a = view(c, d.models, ModelRegistry::adapterCall { adapterId: id });
    assert_eq!(
        (a.pricePer1kTokens.to::<u64>(), a.versionCount, a.retired),
        (7, 2, false)
    );
    send(
        c,
        &dev,
        d.models,
        ModelRegistry::retireCall { adapterId: id },
    );
    let e: ModelRegistryErrors = send_err(c, &dev, d.models, price);
    assert!(matches!(e, ModelRegistryErrors::Retired(_)), "{e:?}");
}
