//! Curator changes after creation, and the read check training relies on.

use credence_datanet::Error;
use credence_datanet::model::{AccessDecision, CuratorChange, Datanet, Signed, Status, Visibility};
use credence_datanet::sign::LocalSigner;
use credence_datanet::{Datanets, now_millis};

use crate::common::*;

fn change(
    nets: &Datanets,
    address: &LocalSigner,
    add: bool,
    signer: &LocalSigner,
) -> credence_datanet::Result<Datanet> {
    let payload = CuratorChange {
        datanet: "cur".into(),
        address: address.address(),
        add,
        time: now_millis(),
    };
    nets.change_curator(&Signed::sign(payload, signer).expect("sign"))
}

#[test]
fn the_owner_adds_and_removes_curators() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    create(&nets, "cur", Visibility::Public);
    contribute(
        &nets,
        "cur",
        &jsonl(&[&sentence(1), &sentence(2)]),
        &alice(),
    )
    .expect("add");
    let entries: Vec<i64> = nets
        .records("cur", None, 0, 10, None)
        .expect("records")
        .iter()
        .map(|r| r.entry)
        .collect();

    // Not yet a curator: bob may not review.
    let refused = review(&nets, "cur", vec![accept(entries[0])], &bob());
    assert!(
        matches!(refused, Err(Error::Forbidden { .. })),
        "{refused:?}"
    );

    let net = change(&nets, &bob(), true, &owner()).expect("add curator");
    assert_eq!(net.curators, vec![bob().address()]);
    let outcome = review(&nets, "cur", vec![accept(entries[0])], &bob()).expect("review");
    assert_eq!(outcome[0].status, Status::Accepted);

    // Adding twice or removing a non-curator changes nothing and says so.
    let twice = change(&nets, &bob(), true, &owner());
    assert!(matches!(twice, Err(Error::Conflict(_))), "{twice:?}");
    let absent = change(&nets, &alice(), false, &owner());
    assert!(matches!(absent, Err(Error::Conflict(_))), "{absent:?}");
    let owner_itself = change(&nets, &owner(), true, &owner());
    assert!(
        matches!(owner_itself, Err(Error::Invalid { .. })),
        "{owner_itself:?}"
    );

    let net = change(&nets, &bob(), false, &owner()).expect("remove curator");
    assert!(net.curators.is_empty());
    let refused = review(&nets, "cur", vec![accept(entries[1])], &bob());
    assert!(
        matches!(refused, Err(Error::Forbidden { .. })),
        "{refused:?}"
    );
}

#[test]
fn only_the_owner_changes_curators() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    create(&nets, "cur", Visibility::Public);
    change(&nets, &bob(), true, &owner()).expect("add bob");

    // A stranger, and a curator, may not add anyone (themselves included).
    for signer in [alice(), bob()] {
        let refused = change(&nets, &alice(), true, &signer);
        assert!(
            matches!(refused, Err(Error::Forbidden { .. })),
            "{refused:?}"
        );
    }
    // Nor remove a curator.
    let refused = change(&nets, &bob(), false, &alice());
    assert!(
        matches!(refused, Err(Error::Forbidden { .. })),
        "{refused:?}"
    );

    // A change claimed by the owner but signed by someone else.
    let payload = CuratorChange {
        datanet: "cur".into(),
        address: alice().address(),
        add: true,
        time: now_millis(),
    };
    let forged = Signed {
        signer: owner().address(),
        ..Signed::sign(payload, &alice()).expect("sign")
    };
    let refused = nets.change_curator(&forged);
    assert!(
        matches!(refused, Err(Error::WrongSigner { .. })),
        "{refused:?}"
    );

    // A replayed change is refused even when it would apply again.
    let payload = CuratorChange {
        datanet: "cur".into(),
        address: bob().address(),
        add: false,
        time: now_millis(),
    };
    let removal = Signed::sign(payload, &owner()).expect("sign");
    nets.change_curator(&removal).expect("remove");
    change(&nets, &bob(), true, &owner()).expect("add again");
    let replay = nets.change_curator(&removal);
    assert!(matches!(replay, Err(Error::Conflict(_))), "{replay:?}");

    assert_eq!(
        nets.get("cur").expect("get").curators,
        vec![bob().address()]
    );
}

/// `authorize_read` is what training calls with the trainer's address before
/// reading a version; it follows grants and curator changes.
#[test]
fn authorize_read_is_the_training_access_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    create(&nets, "cur", Visibility::Permissioned);
    let trainer = LocalSigner::from_seed("trainer");
    let forbidden = |who: Option<&LocalSigner>| {
        let address = who.map(LocalSigner::address);
        matches!(
            nets.authorize_read("cur", address.as_ref()),
            Err(Error::Forbidden { .. })
        )
    };
    assert!(forbidden(None));
    assert!(forbidden(Some(&trainer)));
    assert!(!forbidden(Some(&owner())));

    // A curator reads while they are one.
    change(&nets, &trainer, true, &owner()).expect("add");
    assert!(!forbidden(Some(&trainer)));
    change(&nets, &trainer, false, &owner()).expect("remove");
    assert!(forbidden(Some(&trainer)));

    // A grant from the owner opens it; a later denial closes it again.
    for (grant, open) in [(true, true), (false, false)] {
        let decision = AccessDecision {
            datanet: "cur".into(),
            address: trainer.address(),
            grant,
            time: now_millis(),
        };
        nets.decide_access(&Signed::sign(decision, &owner()).expect("sign"))
            .expect("decide");
        assert_eq!(!forbidden(Some(&trainer)), open);
    }

    let unknown = nets.authorize_read("nope", None);
    assert!(
        matches!(unknown, Err(Error::NotFound { .. })),
        "{unknown:?}"
    );
}
