use super::*;

fn raw() -> RawProfile {
    RawProfile {
        commitment: vec![0; 97],
        version: "ab".repeat(32),
        name: Some(vec![1; 81]),
        about_emoji: None,
        about: Some(vec![]),
        payment_address: None,
        phone_number_sharing: Some(vec![2; 29]),
        avatar: true,
        same_avatar: false,
    }
}

#[test]
fn valid_profile_passes_and_empty_fields_become_none() {
    let v = validate(&raw()).unwrap();
    assert_eq!(v.name.len(), 81);
    assert_eq!(v.about, None);
    assert_eq!(v.phone_number_sharing, Some(vec![2; 29]));
    assert_eq!(v.avatar, AvatarChange::Update);
}

#[test]
fn every_size_rule() {
    let bad = |f: fn(&mut RawProfile)| {
        let mut r = raw();
        f(&mut r);
        validate(&r)
    };
    assert_eq!(
        bad(|r| r.commitment.pop().map(drop).unwrap_or(())),
        Err(ProfileRuleError::BadCommitment)
    );
    for f in [
        (|r: &mut RawProfile| r.version = "ab".repeat(31)) as fn(&mut RawProfile),
        |r| r.version = format!("{}zz", "ab".repeat(31)),
        |r| r.version = "ab".repeat(33),
        |r| r.name = None,
        |r| r.name = Some(vec![0; 80]),
        |r| r.name = Some(vec![]),
        |r| r.about_emoji = Some(vec![0; 59]),
        |r| r.about = Some(vec![0; 157]),
        |r| r.payment_address = Some(vec![0; 581]),
        |r| r.phone_number_sharing = Some(vec![0; 30]),
    ] {
        assert!(matches!(bad(f), Err(ProfileRuleError::Invalid(_))));
    }
    for f in [
        (|r: &mut RawProfile| r.name = Some(vec![0; 285])) as fn(&mut RawProfile),
        |r| r.about_emoji = Some(vec![0; 60]),
        |r| r.about = Some(vec![0; 156]),
        |r| r.about = Some(vec![0; 282]),
        |r| r.about = Some(vec![0; 540]),
        |r| r.payment_address = Some(vec![0; 582]),
        |r| r.version = "AB".repeat(32),
    ] {
        assert!(bad(f).is_ok());
    }
}

#[test]
fn avatar_semantics() {
    assert_eq!(AvatarChange::of(false, true), AvatarChange::Clear);
    assert_eq!(AvatarChange::of(false, false), AvatarChange::Clear);
    assert_eq!(AvatarChange::of(true, true), AvatarChange::Unchanged);
    assert_eq!(AvatarChange::of(true, false), AvatarChange::Update);
    let mut r = raw();
    let first = plan_profile(&validate(&r).unwrap(), None, Some("profiles/new".into()));
    assert_eq!(first.avatar.as_deref(), Some("profiles/new"));
    r.same_avatar = true;
    r.commitment = vec![9; 97];
    let kept = plan_profile(&validate(&r).unwrap(), Some(&first), Some("x".into()));
    assert_eq!(kept.avatar.as_deref(), Some("profiles/new"));
    assert_eq!(
        kept.commitment,
        vec![0; 97],
        "the first commitment of a version stays"
    );
    r.avatar = false;
    assert_eq!(
        plan_profile(&validate(&r).unwrap(), Some(&first), None).avatar,
        None
    );
}

#[test]
fn avatar_keys_have_the_form() {
    struct Fixed;
    impl SecureRandom for Fixed {
        fn fill(&self, dest: &mut [u8]) {
            dest.fill(0xff);
        }
    }
    assert_eq!(new_avatar_key(&Fixed), "profiles/_____________________w");
}

#[test]
fn checksum_is_hmac_of_32_zero_bytes() {
    // HMAC-SHA256(key = 16 zero bytes, 32 zero bytes), computed independently (openssl dgst -sha256 -mac HMAC).
    let c = unidentified_access_checksum(&[0; 16]);
    assert_eq!(
        hex::encode(c),
        "33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a"
    );
}

#[test]
fn base_read_credentials() {
    use super::{BaseReadAuth, plan_base_read};
    use crate::messages::CredentialConflict;
    assert_eq!(plan_base_read(false, false), Ok(BaseReadAuth::Standard));
    assert_eq!(plan_base_read(true, false), Ok(BaseReadAuth::Standard));
    assert_eq!(
        plan_base_read(false, true),
        Ok(BaseReadAuth::GroupSendToken)
    );
    assert_eq!(
        plan_base_read(true, true),
        Err(CredentialConflict::TokenWithOtherCredentials)
    );
}
